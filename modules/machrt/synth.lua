-- The embedded default dataset: plans and writes a synthetic MIMII-like
-- corpus (the sounds come from the C synthesizer, machrt.synth_c).
--
--   local synth = require "machrt.synth"
--   local info = synth.generate("data/synthetic", {clips = 960, seed = 1})
--   local info = synth.ensure("data/synthetic")   -- generates on first use only
--   -- info = {data_folder =, csv =, clips =, seconds =}
--
-- <out>/synth.json records the generator version (M.VERSION) and the options
-- the corpus was made with; ensure regenerates a corpus whose version is not
-- the current one (or that has no synth.json: made before versions existed),
-- so a corpus left on disk by an older synthesizer is never silently reused.
--
-- Layout as MIMII: <type>/id_<NN>/<normal|abnormal>/<NNNNNNNN>.wav, 16 kHz,
-- 16-bit, 10 s; plus <out>/dataset.csv in the reference layout (an unnamed
-- index column, audio, label, model_id, condition, snr_db) and the fault's
-- severity (fault_severity: 0 for normal clips, (0, 1] for abnormal ones). Clip k's sound
-- depends only on (seed, k) and the options, so any thread count writes the
-- same bytes.

local C = require "machrt.synth_c"
local mt = require "machrt"
local sys = require "machrt.sys"

local M = {}

-- One clip's sounds, and the machine types: the C synthesizer's own calls.
--   synth.clip{type = "fan", model_id = 0, condition = "normal", snr_db = 0,
--              channels = 1, seed = 1, index = 0} --> mix, machine, noise
--   (condition = "abnormal" takes fault_severity in (0, 1], default 1)
--   synth.types() --> {"fan", "pump", "slider", "valve"}
--   synth.write(list, {threads = n})  -- list of clip tables with `path`
M.clip = C.clip
M.types = C.types
M.write = C.write

M.CSV_NAME = "dataset.csv"
M.META_NAME = "synth.json"

-- The generator version: raised whenever the sounds change for the same
-- seed and options. 1: the first synthesizer (no synth.json); 2: slide
-- rails with a positioning program, a fixed drive line, high friction noise
-- and low rumble (closer to the MIMII slider samples); 3: recordings of one
-- machine vary (operating point, load, microphone placement), and each
-- fault has a planned severity from subtle to gross (the CSV's
-- fault_severity column).
M.VERSION = 3

M.DEFAULTS = {
    clips = 960,                                -- the reference run's size
    seed = 1,
    types = { "fan", "pump", "slider", "valve" },
    ids = { 0, 2, 4, 6 },                       -- MIMII's model ids
    abnormal_fraction = 0.2,
    snr = { 6, 0, -6 },                         -- MIMII's three mixes
    channels = 1,
    threads = nil,                              -- nil: mt.get_num_threads()
    force = false,
    progress = nil,                             -- function(done, total, seconds) or nil
}

local function fail(fmt, ...)
    error("synth: " .. string.format(fmt, ...), 0)
end

local function is_int(v) return math.type(v) == "integer" or (type(v) == "number" and v == math.floor(v)) end

-- Fills defaults and checks every option; returns a new table.
function M.options(opts)
    opts = opts or {}
    local o = {}
    for k, v in pairs(M.DEFAULTS) do o[k] = v end
    for k, v in pairs(opts) do
        if M.DEFAULTS[k] == nil and k ~= "threads" and k ~= "progress" then
            local names = {}
            for name in pairs(M.DEFAULTS) do names[#names + 1] = name end
            table.sort(names)
            fail("unknown option '%s' (options: %s)", tostring(k), table.concat(names, ", "))
        end
        o[k] = v
    end
    if not is_int(o.clips) or o.clips < 1 then
        fail("the number of clips must be a positive integer, got %s", tostring(o.clips))
    end
    if not is_int(o.seed) or o.seed < 0 then
        fail("the seed must be a non-negative integer, got %s", tostring(o.seed))
    end
    local known = {}
    for _, t in ipairs(C.types()) do known[t] = true end
    if type(o.types) ~= "table" or #o.types == 0 then fail("no machine types given") end
    local seen = {}
    for _, t in ipairs(o.types) do
        if not known[t] then
            fail("unknown machine type '%s' (fan, pump, slider, valve)", tostring(t))
        end
        if seen[t] then fail("machine type '%s' given twice", t) end
        seen[t] = true
    end
    if type(o.ids) ~= "table" or #o.ids == 0 then fail("no model ids given") end
    seen = {}
    for _, id in ipairs(o.ids) do
        if not is_int(id) or id < 0 or id > 99 then
            fail("a model id must be an integer in 0..99, got %s", tostring(id))
        end
        if seen[id] then fail("model id %d given twice", id) end
        seen[id] = true
    end
    local f = o.abnormal_fraction
    if type(f) ~= "number" or f ~= f or f < 0 or f > 1 then
        fail("the abnormal fraction must be a number in [0, 1], got %s", tostring(f))
    end
    if type(o.snr) ~= "table" or #o.snr == 0 then fail("no SNR given") end
    for _, s in ipairs(o.snr) do
        if type(s) ~= "number" or s ~= s or s < -30 or s > 30 then
            fail("an SNR must be a number of dB in [-30, 30], got %s", tostring(s))
        end
    end
    if o.channels ~= 1 and o.channels ~= 8 then
        fail("channels must be 1 or 8, got %s", tostring(o.channels))
    end
    if o.threads ~= nil and (not is_int(o.threads) or o.threads < 1) then
        fail("threads must be a positive integer, got %s", tostring(o.threads))
    end
    return o
end

local EPS = 1e-9

-- Splits `total` into whole shares of `quotas` (numbers summing to about
-- `total`): each share is its quota rounded down, and the units left go to
-- the largest remainders; among equal remainders they are spread evenly
-- over the tied entries in order (every k-th one), as clips are in a pair.
local function apportion(quotas, total)
    local share, left, rest = {}, total, {}
    for i, q in ipairs(quotas) do
        share[i] = math.floor(q + EPS)
        left = left - share[i]
        rest[i] = q - share[i]
    end
    local given = {}
    while left > 0 do
        local best
        for i, r in ipairs(rest) do
            if not given[i] and r > EPS and (not best or r > best + EPS) then best = r end
        end
        if not best then break end
        local tied = {}
        for i, r in ipairs(rest) do
            if not given[i] and math.abs(r - best) <= EPS then tied[#tied + 1] = i end
        end
        local k = math.min(left, #tied)
        for q, i in ipairs(tied) do
            given[i] = true
            if math.floor(q * k / #tied + EPS) > math.floor((q - 1) * k / #tied + EPS) then
                share[i] = share[i] + 1
            end
        end
        left = left - k
    end
    return share
end

-- Abnormal clips per (type, model id) pair: round(clips * f) in all,
-- apportioned to the types by their clip counts, then within each type to
-- its model ids, so every size gets the promised share per type (a pair
-- holding a multiple of 1 / f clips gets exactly that share).
local function abnormal_counts(o, pair_clips, type_clips)
    local f, counts = o.abnormal_fraction, {}
    local type_quota = {}
    for ti = 1, #o.types do type_quota[ti] = type_clips[ti] * f end
    local per_type = apportion(type_quota, math.floor(o.clips * f + 0.5 + EPS))
    for ti = 1, #o.types do
        local quota = {}
        for ii = 1, #o.ids do quota[ii] = pair_clips[ti][ii] * f end
        counts[ti] = apportion(quota, per_type[ti])
    end
    return counts
end

-- Severity of the j-th (0-based) of the K abnormal clips of a (type, model
-- id) pair at its SNR, the s-th of `ns` SNRs: the pair's severities form
-- the grid of K * ns evenly spaced quantiles of [MIN_SEVERITY, 1], each SNR
-- taking every ns-th point, shifted by s, and by ns - 1 - s on odd j, so
-- that every SNR gets the whole range with the same mean (severity and SNR
-- are not confounded); no random draw. Rounded to 0.01, so the CSV holds
-- exactly the value the clip was made with.
local MIN_SEVERITY = 0.05
local function fault_severity(j, K, s, ns)
    local shift = j % 2 == 0 and s or ns - 1 - s
    local u = (j * ns + shift + 0.5) / (K * ns)
    return math.floor((MIN_SEVERITY + (1 - MIN_SEVERITY) * u) * 100 + 0.5) / 100
end

-- The corpus as a list of clips: {path (relative), type, model_id,
-- condition, fault_severity, snr_db, channels, seed, index}. Types take turns, then model
-- ids within a type; the n-th clip (0-based) of a (type, id) pair of N
-- clips, a of them abnormal (abnormal_counts), gets SNR snr[n % #snr + 1]
-- and is abnormal when floor((n + 1) * g) > floor(n * g) with g = a / N,
-- which spreads the abnormal clips evenly (with g = 0.2: every fifth,
-- cycling through the SNRs).
function M.plan(opts)
    local o = M.options(opts)
    local nt, ni, ns = #o.types, #o.ids, #o.snr
    local pair_clips, type_clips = {}, {}
    for ti = 1, nt do
        type_clips[ti], pair_clips[ti] = 0, {}
        for ii = 1, ni do pair_clips[ti][ii] = 0 end
    end
    local place = {}
    for k = 0, o.clips - 1 do
        local ti = k % nt + 1
        local j = k // nt
        local ii = j % ni + 1
        place[k] = { ti, ii, j // ni }
        pair_clips[ti][ii] = pair_clips[ti][ii] + 1
        type_clips[ti] = type_clips[ti] + 1
    end
    local abnormal = abnormal_counts(o, pair_clips, type_clips)
    -- Each clip's condition, and how many abnormal clips each (pair, SNR) holds.
    local cond, per_snr = {}, {}
    for k = 0, o.clips - 1 do
        local ti, ii, m = table.unpack(place[k])
        local g = abnormal[ti][ii] / pair_clips[ti][ii]
        cond[k] = math.floor((m + 1) * g + EPS) > math.floor(m * g + EPS) and "abnormal" or "normal"
        local key = ti .. "/" .. ii .. "@" .. m % ns
        if cond[k] == "abnormal" then per_snr[key] = (per_snr[key] or 0) + 1 end
    end
    local counters, clips = {}, {}
    for k = 0, o.clips - 1 do
        local ti, ii, m = table.unpack(place[k])
        local t, id = o.types[ti], math.tointeger(o.ids[ii])
        local dir = string.format("%s/id_%02d/%s", t, id, cond[k])
        local num = counters[dir] or 0
        counters[dir] = num + 1
        local si, key = m % ns, ti .. "/" .. ii .. "@" .. m % ns
        local severity = 0
        if cond[k] == "abnormal" then
            local j = counters[key] or 0
            counters[key] = j + 1
            severity = fault_severity(j, per_snr[key], si, ns)
        end
        clips[#clips + 1] = {
            path = string.format("%s/%08d.wav", dir, num),
            type = t, model_id = id, condition = cond[k], snr_db = o.snr[si + 1],
            fault_severity = severity,
            channels = o.channels, seed = math.tointeger(o.seed), index = k,
        }
    end
    return clips, o
end

local function fmt_number(v)
    if math.type(v) == "integer" or v == math.floor(v) then return string.format("%d", v) end
    return string.format("%g", v)
end

-- The CSV text of a plan, in the reference layout.
function M.csv(clips)
    local lines = { ",audio,label,model_id,condition,snr_db,fault_severity" }
    for i, c in ipairs(clips) do
        lines[#lines + 1] = string.format("%d,%s,%s,%02d,%s,%s,%s", i - 1, c.path, c.type,
            c.model_id, c.condition, fmt_number(c.snr_db), fmt_number(c.fault_severity))
    end
    return table.concat(lines, "\n") .. "\n"
end

-- Writes `text` to `path` through a temporary name, so `path` never holds
-- a half-written file.
local function write_atomic(path, text)
    local ok, err = pcall(sys.write_file, path, text)
    if not ok then fail("%s", tostring(err)) end
end

-- Checks that `out` can receive the corpus: refuses a folder holding other
-- files unless `force`, creates it otherwise, and proves it writable.
local function prepare_folder(out, force)
    if type(out) ~= "string" or out == "" then fail("needs an output folder") end
    local state, entry = sys.folder_state(out)
    if state == "file" then fail("%s exists and is not a folder", out) end
    if state == "nonempty" and not force then
        fail("%s already holds files (%s, ...); choose another folder or pass --force "
            .. "to write over it", out, entry)
    end
    local ok, err = pcall(sys.mkdir, out)
    if not ok then fail("cannot create the output folder %s: %s", out, tostring(err)) end
    local probe = out .. "/.synth-write-test"
    local f, ferr = io.open(probe, "wb")
    if not f then fail("cannot write into %s: %s", out, ferr) end
    f:close()
    os.remove(probe)
end

-- The text of synth.json for options `o` (keys in a fixed order, so the
-- file is byte-identical for the same options).
local function meta_text(o)
    local function list(t)
        local parts = {}
        for i, v in ipairs(t) do
            parts[i] = type(v) == "string" and string.format("%q", v) or fmt_number(v)
        end
        return "[" .. table.concat(parts, ", ") .. "]"
    end
    return string.format('{\n  "generator_version": %d,\n  "clips": %d,\n  "seed": %d,\n'
        .. '  "types": %s,\n  "ids": %s,\n  "abnormal_fraction": %s,\n  "snr": %s,\n'
        .. '  "channels": %d\n}\n', M.VERSION, o.clips, o.seed, list(o.types), list(o.ids),
        fmt_number(o.abnormal_fraction), list(o.snr), o.channels)
end

-- The generator version recorded in `folder` (1 when synth.json is
-- missing: corpora made before versions existed), or nil and a reason when
-- the file cannot be read.
function M.version_of(folder)
    local path = folder .. "/" .. M.META_NAME
    if not sys.stat(path) then return 1 end
    local ok, meta = pcall(sys.read_json, path)
    if not ok or type(meta) ~= "table" or math.type(meta.generator_version) == nil then
        return nil, path .. " holds no generator_version"
    end
    return math.tointeger(meta.generator_version) or meta.generator_version
end

-- Generates the corpus into `out`; returns {data_folder, csv, clips, seconds}.
function M.generate(out, opts)
    local clips, o = M.plan(opts)
    prepare_folder(out, o.force)
    local threads = o.threads or mt.get_num_threads()
    local t0 = mt.clock()
    -- Batches keep progress visible; each batch runs in parallel in C.
    local batch = math.max(16, 8 * threads)
    for first = 1, #clips, batch do
        local list = {}
        for i = first, math.min(first + batch - 1, #clips) do
            local c = clips[i]
            list[#list + 1] = { path = out .. "/" .. c.path, type = c.type, model_id = c.model_id,
                condition = c.condition, fault_severity = c.fault_severity,
                snr_db = c.snr_db, channels = c.channels,
                seed = c.seed, index = c.index }
        end
        C.write(list, { threads = threads })
        if o.progress then o.progress(first + #list - 1, #clips, mt.clock() - t0) end
    end
    local csv = out .. "/" .. M.CSV_NAME
    write_atomic(out .. "/" .. M.META_NAME, meta_text(o))
    -- Written last: its presence marks a complete corpus (see ensure).
    write_atomic(csv, M.csv(clips))
    return { data_folder = out, csv = csv, clips = #clips, seconds = mt.clock() - t0 }
end

local function exists(path)
    local f = io.open(path, "rb")
    if f then f:close() end
    return f ~= nil
end

--- A progress callback for generate's opts.progress, drawn by log.progress on
--- `stream` (a bar on a terminal, plain lines into a pipe or a file), and
--- the function that ends it.
function M.progress_bar(stream)
    local bar, shown = nil, 0
    local function update(done, total, seconds)
        bar = bar or require("machrt.log").progress{ title = "synth", total = total, fields = {}, unit = "clips",
                                                     stream = stream, start = mt.clock() - seconds }
        bar:update(done, {}, done - shown)
        shown = done
    end
    return update, function() if bar then bar:finish() end end
end

-- The corpus in `folder` (default data/synthetic), generated with `opts`
-- first when its CSV is missing or it was made by another generator
-- version, saying so on stderr, with progress there (machrt.log's rule).
function M.ensure(folder, opts)
    folder = folder or "data/synthetic"
    local csv = folder .. "/" .. M.CSV_NAME
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    local n = o.clips or M.DEFAULTS.clips
    local what = string.format("the default synthetic corpus (%d clips, seed %d)", n,
        o.seed or M.DEFAULTS.seed)
    if exists(csv) then
        local version, why = M.version_of(folder)
        if version == M.VERSION then
            return { data_folder = folder, csv = csv, generated = false }
        end
        io.stderr:write(string.format("synth: the dataset in %s was made by synthesizer "
            .. "version %s, this is version %d; regenerating %s ...\n", folder,
            version and tostring(version) or ("unknown (" .. why .. ")"), M.VERSION, what))
        -- Until the new CSV is written the folder must not look complete.
        os.remove(csv)
        os.remove(folder .. "/" .. M.META_NAME)
    else
        io.stderr:write(string.format("synth: no dataset in %s; generating %s ...\n", folder,
            what))
    end
    -- A folder left by an interrupted run holds clips but no CSV: finish it.
    o.force = true
    local finish
    if not o.progress then o.progress, finish = M.progress_bar(io.stderr) end
    local info = M.generate(folder, o)
    if finish then finish() end
    io.stderr:write(string.format("synth: %d clips written to %s in %.1f s\n", info.clips,
        folder, info.seconds))
    info.generated = true
    return info
end

return M
