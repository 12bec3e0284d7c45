-- What the resampler does to the model's input: the real sample clips
-- (16 kHz MIMII) taken to 22050 Hz by machrt's libsoxr and by torchaudio's
-- default resampler (bench/peers/torchaudio_resample_clips.py), then the
-- same log-mel front end (the reference settings) on both. Prints the mean
-- absolute dB difference per band of mel bins, by centre frequency.
--
--   MACHRT_SAMPLE_DATA=../shared/data/mimii-sample PYTHON=peers/bin/python \
--       ./machrt bench/resampler_mel.lua
--
-- Not part of `make bench` (it needs the sample clips and PyTorch).

local mt = require "machrt"
local audio = require "machrt.audio"
local csv = require "machrt.data.csv"
local pipeline = require "machrt.pipeline"

local folder = os.getenv("MACHRT_SAMPLE_DATA") or "../shared/data/mimii-sample"
local python = os.getenv("PYTHON") or "python3"
local TO = 22050
local A = { sample_rate = TO, stft_window_size = 2048, hop_size = 512, mel_frequency_bins = 128,
            minimum_frequency = 50, maximum_frequency = 16000, spectrogram_normalization = "No" }
mt.set_num_threads(2)

local df = csv.read(folder .. "/sample.csv")
local native, from = {}, nil
for i, rel in ipairs(df:column("audio")) do
    local path = folder .. "/" .. rel
    local info = audio.info(path)
    from = from or info.sample_rate
    assert(info.sample_rate == from, path .. ": the clips must share one sample rate")
    native["clip" .. i] = pipeline.decode(path, { channel = 1, sample_rate = from, info = info })
end
local tmp = os.tmpname()
mt.save(tmp .. ".in", native)
local cmd = string.format("%s bench/peers/torchaudio_resample_clips.py %s.in %s.out %d %d", python, tmp, tmp, from, TO)
assert(os.execute(cmd), "the peer failed: " .. cmd)
local peer = mt.load(tmp .. ".out")
os.remove(tmp .. ".in"); os.remove(tmp .. ".out"); os.remove(tmp)

-- HTK mel centres of the 128 filters, as the front end spaces them.
local function mel(f) return 2595 * math.log(1 + f / 700, 10) end
local function hz(m) return 700 * (10 ^ (m / 2595) - 1) end
local lo, hi = mel(A.minimum_frequency), mel(A.maximum_frequency)
local centre = {}
for k = 1, A.mel_frequency_bins do centre[k] = hz(lo + k * (hi - lo) / (A.mel_frequency_bins + 1)) end

local BANDS = { { 0, 1000 }, { 1000, 4000 }, { 4000, 6000 }, { 6000, 7000 }, { 7000, 7500 }, { 7500, 8000 },
                { 8000, 11025 } }
local front = pipeline.front_end(A, "cpu", { quiet = true })
local sums, counts, wave_err, wave_ref = {}, {}, 0, 0
for b = 1, #BANDS do sums[b], counts[b] = 0, 0 end
for name in pairs(native) do
    local ours = pipeline.decode(folder .. "/" .. df:column("audio")[tonumber(name:match("%d+"))],
                                 { channel = 1, sample_rate = TO })
    local theirs = peer[name]
    assert(ours:size(1) == theirs:size(1), name .. ": frame counts differ")
    local diff = ours - theirs
    wave_err = wave_err + (diff * diff):sum()
    wave_ref = wave_ref + (ours * ours):sum()
    local a = front(ours:reshape{ 1, ours:size(1) }):clone()
    local d = (a - front(theirs:reshape{ 1, theirs:size(1) })):abs():mean(4) -- {1, 1, mels}
    for k = 1, A.mel_frequency_bins do
        for b, band in ipairs(BANDS) do
            if centre[k] >= band[1] and centre[k] < band[2] then
                sums[b], counts[b] = sums[b] + d:get(1, 1, k), counts[b] + 1
            end
        end
    end
end
print(string.format("%d clips, %d Hz -> %d Hz: wave difference %.1f dB relative to the wave",
                    df:nrows(), from, TO, 10 * math.log(wave_err / wave_ref, 10)))
print("mel bins by centre frequency   bins   mean |dB difference| (libsoxr - torchaudio)")
for b, band in ipairs(BANDS) do
    if counts[b] > 0 then
        print(string.format("  %5d - %5d Hz            %4d   %.3f dB", band[1], band[2],
                            counts[b] // df:nrows(), sums[b] / counts[b]))
    end
end
