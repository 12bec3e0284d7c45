-- What the in-memory wave cache (dataset.cache = "memory") costs in bytes
-- and in CPU time, on the built-in corpus (16 kHz 16-bit PCM, 10 s clips)
-- at the reference's 22050 Hz:
--   decode    what a miss costs, and every load with dataset.cache = none:
--             pipeline.decode (decode, channel, resample)
--   from 16-bit   what every hit costs now that the cache keeps the file's
--             16-bit samples: pipeline.from_samples (to float, resample)
-- A hit on a cache of float32 waves cost nothing but the lookup; the 16-bit
-- cache pays a resampling per load instead, for less than half the bytes.
-- One thread, CPU seconds (os.clock), the two measured in alternating
-- rounds, best round of each; the load average beside the figures.
--   machrt bench/wave_cache.lua [clips] [rounds] [resampler]
local mt = require "machrt"
local audio = require "machrt.audio"
local pipeline = require "machrt.pipeline"
local synth = require "machrt.synth"
local cpuinfo = require "machrt.cpuinfo"

local CLIPS = tonumber(arg and arg[1]) or 64
local ROUNDS = tonumber(arg and arg[2]) or 3
local RESAMPLER = arg and arg[3] or "soxr"
local RATE = 22050

mt.set_num_threads(1)


local info = synth.ensure("data/synthetic")
local paths = {}
local f = assert(io.open(info.csv))
f:read("l") -- header
for line in f:lines() do
    if #paths >= CLIPS then break end
    paths[#paths + 1] = info.data_folder .. "/" .. line:match("^[^,]*,([^,]+)")
end
f:close()

local opts = { sample_rate = RATE, resampler = RESAMPLER, channel = 1 }
local samples, float_bytes, packed_bytes = {}, 0, 0
for i, p in ipairs(paths) do
    samples[i] = pipeline.decode_samples(p, opts) or error(p .. " is not 16-bit PCM")
    packed_bytes = packed_bytes + samples[i]:numel() * 8
    float_bytes = float_bytes + pipeline.decode(p, opts):numel() * 4
end

local function cpu(fn)
    local t0 = os.clock()
    for i, p in ipairs(paths) do fn(i, p) end
    return os.clock() - t0
end

local best = { decode = math.huge, unpack = math.huge }
for _ = 1, ROUNDS do
    best.decode = math.min(best.decode, cpu(function(_, p) pipeline.decode(p, opts) end))
    best.unpack = math.min(best.unpack, cpu(function(i, p) pipeline.from_samples(samples[i], p, opts) end))
end

print(cpuinfo.line())
print(string.format("wave cache, %d clips of the built-in corpus (%s), %s to %d Hz, 1 thread, CPU time, "
                    .. "best of %d rounds (load average %s)", #paths, audio.info(paths[1]).encoding,
                    RESAMPLER, RATE, ROUNDS, cpuinfo.loadavg()))
print(string.format("  %-44s %8.1f clips/s  %6.2f ms CPU a clip", "decode + resample (a miss; cache = none)",
                    #paths / best.decode, 1e3 * best.decode / #paths))
print(string.format("  %-44s %8.1f clips/s  %6.2f ms CPU a clip", "16-bit samples to float + resample (a hit)",
                    #paths / best.unpack, 1e3 * best.unpack / #paths))
print(string.format("  bytes a clip: float32 wave at %d Hz %.0f, 16-bit samples %.0f (%.2fx smaller)", RATE,
                    float_bytes / #paths, packed_bytes / #paths, float_bytes / packed_bytes))
