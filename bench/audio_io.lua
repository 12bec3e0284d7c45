-- Audio I/O benchmarks (issue 3), run through `make bench`:
--   ./machrt bench/audio_io.lua [rounds]
-- 1. Resampling 16000 -> 22050 Hz of 10 s clips (batches of 16, 2 threads):
--    machrt audio.resample (libsoxr, and its resampler = "torchaudio") next
--    to torchaudio.transforms.Resample
--    (bench/peers/torchaudio_resample.py, torch.set_num_threads(2)), with the
--    tone error of each (1, 5, 7 kHz, dB) for scale. The peer runs under
--    $PYTHON, else Debian's /usr/bin/python3 (where python3-torchaudio
--    lives), else python3.
-- 2. Decoding the 8-channel MIMII sample clips (16 kHz, 16-bit, 10 s):
--    files/s for all channels, one channel picked, and one channel picked
--    and resampled to 22050 Hz (the training path). The clips are found
--    through MACHRT_SAMPLE_DATA, else ../shared/data/mimii-sample; without
--    them this part says so and is skipped.
--
-- Other work shares these cores, so the two resamplers are measured in
-- alternating rounds and each keeps its best round.
local mt = require "machrt"
local audio = require "machrt.audio"

local ROUNDS = tonumber(arg and arg[1]) or 3
local CLIPS, FROM, TO, SECONDS, THREADS = 16, 16000, 22050, 10, 2
local REPS = 5 -- timed calls per round (the peer does the same)

local function file_exists(p)
    local f = io.open(p, "r")
    if f then f:close() end
    return f ~= nil
end
local python = os.getenv("PYTHON") or (file_exists("/usr/bin/python3") and "/usr/bin/python3")
    or "python3"

mt.set_num_threads(THREADS)

-- Relative error power (dB) of a tone resampled FROM -> TO against the
-- ideal tone, 5 % excluded at each edge (the measure of the tests).
local function tone_error_db(f, resampler)
    local n = 2 * FROM
    local x = {}
    for i = 1, n do x[i] = math.sin(2 * math.pi * f * (i - 1) / FROM) end
    local y = audio.resample(mt.tensor(x), FROM, TO, { resampler = resampler }):totable()
    local m = #y
    local e, s = 0, 0
    for i = m // 20, m - m // 20 - 1 do
        local ref = math.sin(2 * math.pi * f * i / TO)
        e = e + (y[i + 1] - ref) ^ 2
        s = s + ref * ref
    end
    return 10 * math.log(e / s, 10)
end

-- 1. Resampling ---------------------------------------------------------------

mt.manual_seed(0)
local wave = mt.rand { CLIPS, FROM * SECONDS } * 2 - 1

local function machrt_round(resampler)
    local best, y = math.huge, nil
    for _ = 1, REPS do
        y = nil
        collectgarbage()
        local t0 = mt.clock()
        y = audio.resample(wave, FROM, TO, { resampler = resampler })
        best = math.min(best, mt.clock() - t0)
    end
    return best, y
end

local function peer_round()
    local cmd = ("%s bench/peers/torchaudio_resample.py --clips %d --seconds %d --orig %d " ..
        "--new %d --threads %d --reps %d 2>&1"):format(python, CLIPS, SECONDS, FROM, TO, THREADS, REPS)
    local p = io.popen(cmd)
    if not p then return nil, "could not start " .. python end
    local out = p:read("a")
    p:close()
    if out:find("PyTorch not installed", 1, true) then return nil, "PyTorch not installed" end
    local rate, frames, e1, e5, e7 = out:match("torchaudio ([%d.]+) (%d+) (%S+) (%S+) (%S+)")
    if not rate then return nil, "peer failed: " .. out:gsub("%s+$", "") end
    return tonumber(rate), { frames = tonumber(frames), errs = { e1, e5, e7 } }
end

print("== audio I/O: resampling and decoding")
print(("resampling %d -> %d Hz: %d clips x %d s, %d threads, best of %d rounds x %d calls")
    :format(FROM, TO, CLIPS, SECONDS, THREADS, ROUNDS, REPS))
local RESAMPLERS = { "soxr", "torchaudio" }
local best, y = { soxr = math.huge, torchaudio = math.huge }, nil
local peer_best, peer_note, peer_info = nil, nil, nil
for _ = 1, ROUNDS do
    for _, rs in ipairs(RESAMPLERS) do
        local t, out = machrt_round(rs)
        best[rs], y = math.min(best[rs], t), out
    end
    if peer_note == nil then
        local rate, info = peer_round()
        if rate then
            peer_best, peer_info = math.max(peer_best or 0, rate), info
        else
            peer_note = info -- no torchaudio: stop asking
        end
    end
end
local function errs_of(resampler)
    local errs = {}
    for i, f in ipairs { 1000, 5000, 7000 } do errs[i] = ("%.1f"):format(tone_error_db(f, resampler)) end
    return table.concat(errs, " / ")
end

print(("%-40s %10s %12s %9s  %s"):format("", "clips/s", "ms/batch", "frames",
    "tone error dB at 1k/5k/7k"))
for _, rs in ipairs(RESAMPLERS) do
    print(("%-40s %10.1f %12.2f %9d  %s"):format(("machrt audio.resample (%s)"):format(rs),
        CLIPS / best[rs], best[rs] * 1e3, y:size(2), errs_of(rs)))
end
if peer_best then
    print(("%-40s %10.1f %12.2f %9d  %s"):format("torchaudio Resample", peer_best,
        CLIPS / peer_best * 1e3, peer_info.frames, table.concat(peer_info.errs, " / ")))
    for _, rs in ipairs(RESAMPLERS) do
        print(("%-40s %9.1fx"):format(("machrt (%s) / torchaudio"):format(rs), CLIPS / best[rs] / peer_best))
    end
else
    print(("%-40s %s"):format("torchaudio Resample", peer_note))
end

-- 2. Decoding the MIMII sample clips ----------------------------------------------

print("")
local dir = os.getenv("MACHRT_SAMPLE_DATA")
if (not dir or dir == "") and file_exists("../shared/data/mimii-sample/sample.csv") then
    dir = "../shared/data/mimii-sample"
end
local csv = dir and dir ~= "" and io.open(dir .. "/sample.csv")
if not csv then
    print("decode of the MIMII sample clips: skipped (MACHRT_SAMPLE_DATA is not set and " ..
        "../shared/data/mimii-sample is absent)")
    return
end
local files = {}
for line in csv:lines() do
    local rel = line:match("^[^,]*,([^,]+)")
    if rel and rel ~= "audio" then files[#files + 1] = dir .. "/" .. rel end
end
csv:close()
local info = audio.info(files[1])

local function decode_pass(opts)
    collectgarbage()
    local t0 = mt.clock()
    for _, f in ipairs(files) do
        local w = audio.load(f, opts)
        w:release()
    end
    return mt.clock() - t0
end

local cases = {
    { "all %d channels", nil },
    { "channel 1 of %d", { channel = 1 } },
    { "channel 1 of %d, to 22050 Hz", { channel = 1, sample_rate = 22050 } },
}
local bests = {}
for _ = 1, ROUNDS do
    for i, c in ipairs(cases) do
        for _ = 1, 3 do bests[i] = math.min(bests[i] or math.huge, decode_pass(c[2])) end
    end
end
print(("decode of %d MIMII clips (%d channels, %d Hz, %s, %.0f s), best of %d rounds x 3 passes")
    :format(#files, info.channels, info.sample_rate, info.encoding, info.seconds, ROUNDS))
print(("%-40s %10s %12s"):format("", "files/s", "ms/file"))
for i, c in ipairs(cases) do
    print(("%-40s %10.1f %12.2f"):format("audio.load, " .. c[1]:format(info.channels),
        #files / bests[i], bests[i] / #files * 1e3))
end
