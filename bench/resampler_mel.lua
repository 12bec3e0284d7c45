-- What the resampler does to the model's input: the real sample clips
-- (16 kHz MIMII) taken to 22050 Hz by machrt's two resamplers
-- (audio.resampler = "soxr" and "torchaudio") and by torchaudio's default
-- resampler itself (bench/peers/torchaudio_resample_clips.py), then the
-- same log-mel front end (the reference settings) on each. Prints, per band
-- of mel bins by centre frequency, the mean absolute dB difference of each
-- machrt resampler from torchaudio.
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
local RESAMPLERS = { "soxr", "torchaudio" }
local sums, counts, wave_err, wave_ref = {}, {}, {}, 0
for _, rs in ipairs(RESAMPLERS) do
    sums[rs], wave_err[rs] = {}, 0
    for b = 1, #BANDS do sums[rs][b] = 0 end
end
for b = 1, #BANDS do counts[b] = 0 end
for name in pairs(native) do
    local theirs = peer[name]
    local ref = front(theirs:reshape{ 1, theirs:size(1) }):clone()
    wave_ref = wave_ref + (theirs * theirs):sum()
    for _, rs in ipairs(RESAMPLERS) do
        local ours = pipeline.decode(folder .. "/" .. df:column("audio")[tonumber(name:match("%d+"))],
                                     { channel = 1, sample_rate = TO, resampler = rs })
        assert(ours:size(1) == theirs:size(1), name .. ": frame counts differ")
        local diff = ours - theirs
        wave_err[rs] = wave_err[rs] + (diff * diff):sum()
        local d = (front(ours:reshape{ 1, ours:size(1) }) - ref):abs():mean(4) -- {1, 1, mels}
        for k = 1, A.mel_frequency_bins do
            for b, band in ipairs(BANDS) do
                if centre[k] >= band[1] and centre[k] < band[2] then
                    sums[rs][b] = sums[rs][b] + d:get(1, 1, k)
                    if rs == RESAMPLERS[1] then counts[b] = counts[b] + 1 end
                end
            end
        end
    end
end
print(string.format("%d clips, %d Hz -> %d Hz; wave difference from torchaudio, relative to its wave: "
                    .. "soxr %.1f dB, torchaudio %.1f dB", df:nrows(), from, TO,
                    10 * math.log(wave_err.soxr / wave_ref, 10), 10 * math.log(wave_err.torchaudio / wave_ref, 10)))
print("mel bins by centre frequency   bins   mean |dB difference| from torchaudio's resampler")
print("                                      audio.resampler = soxr    torchaudio")
for b, band in ipairs(BANDS) do
    if counts[b] > 0 then
        print(string.format("  %5d - %5d Hz            %4d   %10.3f dB %15.6f dB", band[1], band[2],
                            counts[b] // df:nrows(), sums.soxr[b] / counts[b], sums.torchaudio[b] / counts[b]))
    end
end
