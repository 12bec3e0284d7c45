-- Generates the synthetic MIMII-like machine-sound corpus.
--
--   ./machrt scripts/synth.lua --out data/synthetic [--clips 960] [--seed 1]
--       [--types fan,pump,slider,valve] [--ids 0,2,4,6] [--channels 1|8]
--       [--abnormal-fraction 0.2] [--snr 6,0,-6] [--threads N] [--force] [--quiet]
--
-- Writes <out>/<type>/id_<NN>/<normal|abnormal>/<NNNNNNNN>.wav and
-- <out>/dataset.csv. Options also take the form --key=value.

local synth = require "machrt.synth"
local mt = require "machrt"

local USAGE = [[
usage: machrt scripts/synth.lua --out FOLDER [options]
  --out FOLDER              output folder (must be new or empty unless --force)
  --clips N                 number of clips (default 960)
  --seed N                  seed (default 1): same seed and options, same bytes
  --types LIST              machine types, comma-separated (default fan,pump,slider,valve)
  --ids LIST                model ids 0..99 (default 0,2,4,6)
  --channels 1|8            1 (default) or an 8-microphone array
  --abnormal-fraction F     share of abnormal clips (default 0.2)
  --snr LIST                SNRs in dB, cycled over clips (default 6,0,-6)
  --threads N               worker threads (default: all cores)
  --force                   write into a folder that already holds files
  --quiet                   no progress lines
]]

-- A command line that cannot be read: one line and status 2, as the other
-- scripts (a user's error: runtime/main.c).
local function usage_error(msg) error(msg, 0) end

local function list(s, what, number)
    local out = {}
    for item in (s .. ","):gmatch("([^,]*),") do
        item = item:match("^%s*(.-)%s*$")
        if item == "" then usage_error(string.format("synth: empty entry in %s list '%s'", what, s)) end
        if number then
            local v = tonumber(item)
            if not v then usage_error(string.format("synth: %s must be numbers, got '%s'", what, item)) end
            item = math.tointeger(v) or v
        end
        out[#out + 1] = item
    end
    return out
end

local function integer(s, what)
    local v = math.tointeger(tonumber(s))
    if not v then usage_error(string.format("synth: %s must be an integer, got '%s'", what, s)) end
    return v
end

local function parse(argv)
    local o, out, quiet = {}, nil, false
    local takes = { out = true, clips = true, seed = true, types = true, ids = true,
        channels = true, ["abnormal-fraction"] = true, snr = true, threads = true }
    local i = 1
    while i <= #argv do
        local a = argv[i]
        local key, val = a:match("^%-%-([%w-]+)=(.*)$")
        if not key then key = a:match("^%-%-([%w-]+)$") end
        if not key then usage_error("synth: unexpected argument '" .. a .. "'\n" .. USAGE) end
        if key == "help" or key == "h" then io.write(USAGE); os.exit(0) end
        if key == "force" then o.force = true
        elseif key == "quiet" then quiet = true
        elseif takes[key] then
            if not val then
                i = i + 1
                val = argv[i]
                if not val then usage_error("synth: --" .. key .. " needs a value") end
            end
            if key == "out" then out = val
            elseif key == "clips" then o.clips = integer(val, "--clips")
            elseif key == "seed" then o.seed = integer(val, "--seed")
            elseif key == "types" then o.types = list(val, "--types")
            elseif key == "ids" then o.ids = list(val, "--ids", true)
            elseif key == "channels" then o.channels = integer(val, "--channels")
            elseif key == "abnormal-fraction" then
                o.abnormal_fraction = tonumber(val)
                if not o.abnormal_fraction then
                    usage_error("synth: --abnormal-fraction must be a number, got '" .. val .. "'")
                end
            elseif key == "snr" then o.snr = list(val, "--snr", true)
            elseif key == "threads" then o.threads = integer(val, "--threads")
            end
        else
            usage_error("synth: unknown option --" .. key .. "\n" .. USAGE)
        end
        i = i + 1
    end
    if not out then usage_error("synth: --out FOLDER is required\n" .. USAGE) end
    return out, o, quiet
end

local out, opts, quiet = parse(arg)
if opts.threads then mt.set_num_threads(opts.threads) end
-- The training bar's rule: redrawn in place on a terminal, plain lines into
-- a pipe or a log file.
local finish
if not quiet then opts.progress, finish = synth.progress_bar(io.stdout) end
local ok, info = pcall(synth.generate, out, opts)
if finish then finish() end
-- Raised again as it came: a user's error (an unknown type, a folder that
-- holds files) stays one line with status 2, a bug keeps its position.
if not ok then error(info, 0) end
io.write(string.format("synth: %d clips in %s, %s; %.1f s\n", info.clips, info.data_folder,
    info.csv, info.seconds))
