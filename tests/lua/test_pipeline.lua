-- machrt.pipeline: the clip as the model hears it (channel pick, resample,
-- window), the config-to-torchaudio names of the front end, model
-- construction from the architecture section, and the device choice.

local A = require "assert"
local mt = require "machrt"
local audio = require "machrt.audio"
local nn = require "machrt.nn"
local pipeline = require "machrt.pipeline"

local F = require "files"
local tests, test, tmpdir = F.suite()

local SR = 8000

-- A 2-channel float WAV whose channels differ (lossless: float samples).
local function two_channel_file(dir)
    local n = SR
    local w = mt.empty{ 2, n }
    for k = 1, n do
        w:set(0.5 * math.sin(2 * math.pi * 440 * k / SR), 1, k)
        w:set(0.25 * math.sin(2 * math.pi * 1000 * k / SR + 1), 2, k)
    end
    local path = dir .. "/two.wav"
    audio.save(path, w, SR, { float = true })
    return path, w
end

local function max_abs_diff(a, b) return (a - b):abs():max() end

test("decode picks the configured channel of a multi-channel file", function()
    local path, w = two_channel_file(tmpdir())
    local second = pipeline.decode(path, { sample_rate = SR, channel = 2 })
    A.shape_eq(second, { SR })
    A.eq(max_abs_diff(second, w:select(1, 2)), 0, "channel 2 as written")
    local default = pipeline.decode(path, { sample_rate = SR })
    A.eq(max_abs_diff(default, w:select(1, 1)), 0, "channel 1 by default")
end)

test("decode names the file and the channel that does not exist", function()
    local path = two_channel_file(tmpdir())
    A.raises(function() pipeline.decode(path, { sample_rate = SR, channel = 3 }) end,
             path .. " has 2 channels; audio.channel = 3 does not exist")
end)

test("decode of a mono file takes its only channel whatever audio.channel says", function()
    local dir = tmpdir()
    local mono = mt.tensor{ 0.5, -0.25, 0.125, 0, 0.75 }
    audio.save(dir .. "/mono.wav", mono, SR, { float = true })
    local w = pipeline.decode(dir .. "/mono.wav", { sample_rate = SR, channel = 4 })
    A.tensor_near(w, { 0.5, -0.25, 0.125, 0, 0.75 }, 0)
end)

test("decode resamples and reads a window in seconds", function()
    local path, w = two_channel_file(tmpdir())
    local half = pipeline.decode(path, { sample_rate = SR // 2, channel = 2 })
    A.shape_eq(half, { SR // 2 })
    A.truthy(max_abs_diff(half, audio.resample(w:select(1, 2):contiguous(), SR, SR // 2)) < 1e-6,
             "the same as resampling the channel")
    local window = pipeline.decode(path, { sample_rate = SR, channel = 2, offset = 0.25, duration = 0.5 })
    A.shape_eq(window, { SR // 2 })
    A.eq(max_abs_diff(window, w:select(1, 2):narrow(1, SR // 4 + 1, SR // 2)), 0, "samples 0.25 s .. 0.75 s")
end)

local AUDIO = { sample_rate = SR, stft_window_size = 256, hop_size = 64, mel_frequency_bins = 20,
                minimum_frequency = 100, maximum_frequency = 3000, spectrogram_normalization = "No" }

test("mel_spectrogram maps the reference's keys to torchaudio's names", function()
    mt.manual_seed(1)
    local wave = mt.randn{ 1000 }
    local got = pipeline.mel_spectrogram(AUDIO):forward(wave)
    local want = audio.MelSpectrogram{ sample_rate = SR, n_fft = 256, win_length = 256, hop_length = 64,
                                       f_min = 100, f_max = 3000, n_mels = 20 }:forward(wave)
    -- center = true: 1 + floor(frames / hop) columns.
    A.shape_eq(got, { 20, 1 + 1000 // 64 })
    A.eq(max_abs_diff(got, want), 0)
    local other = audio.MelSpectrogram{ sample_rate = SR, n_fft = 256, hop_length = 64, n_mels = 20 }:forward(wave)
    A.truthy(max_abs_diff(got, other) > 0, "f_min / f_max change the filterbank (the test can tell)")
end)

test("front_end: dB of the mel power, shaped {B, 1, mels, T}, for every batch shape", function()
    mt.manual_seed(2)
    local front = pipeline.front_end(AUDIO, "cpu")
    local mel = pipeline.mel_spectrogram(AUDIO)
    for _, shape in ipairs{ { 3, 1000 }, { 2, 640 }, { 3, 1000 } } do
        local wave = mt.randn(shape)
        local x = front(wave)
        local T = 1 + shape[2] // 64
        A.shape_eq(x, { shape[1], 1, 20, T })
        local want = audio.amplitude_to_db(mel:forward(wave)):reshape{ shape[1], 1, 20, T }
        A.truthy(max_abs_diff(x, want) < 1e-4, "dB values for batch " .. table.concat(shape, "x"))
    end
end)

test("all-zero mel filters are said once per run, in the config's words; a trained model's front end is quiet", function()
    -- maximum_frequency above the Nyquist frequency: the reference's way to get zero filters.
    local settings = "{ sample_rate = 8000, stft_window_size = 256, hop_size = 64, mel_frequency_bins = 64, "
        .. "minimum_frequency = 0, maximum_frequency = 7000, spectrogram_normalization = 'No' }"
    local function run(body)
        return F.run("./machrt -e \"local pipeline = require 'machrt.pipeline'; local a = " .. settings
                     .. "; " .. body .. "\"")
    end
    local code, out = run("for fold = 1, 3 do pipeline.front_end(a, 'cpu') end")
    A.eq(code, 0, out)
    A.eq(select(2, out:gsub("mel filters are all zero", "")), 1, "once over three front ends: " .. out)
    A.truthy(out:find("audio.maximum_frequency (7000 Hz)", 1, true), out)
    code, out = run("for file = 1, 3 do pipeline.front_end(a, 'cpu', { quiet = true }) end")
    A.eq(code, 0, out)
    A.eq(out, "", "a trained model's front end says nothing")
end)

test("front_end refuses spectrogram normalization it does not implement", function()
    local a = {}
    for k, v in pairs(AUDIO) do a[k] = v end
    a.spectrogram_normalization = "Global"
    A.raises(function() pipeline.front_end(a) end, "audio.spectrogram_normalization: only 'No'", "'Global'")
end)

local function same_weights(a, b)
    local n = 0
    for name, t in pairs(a:state_dict()) do
        local u = b:state_dict()[name]
        A.truthy(u, name .. " missing")
        A.eq(t:numel() == 0 and 0 or max_abs_diff(t:float(), u:float()), 0, name)
        n = n + 1
    end
    return n
end

test("build_model: the backbone, pool and width of the architecture section, seeded as nn builds it", function()
    local arch = { backbone = "resnet18", pool = "Avg", dropout = 0, width = 4, pretrained = false }
    mt.manual_seed(5)
    local model = pipeline.build_model(arch, 3)
    mt.manual_seed(5)
    local direct = nn.resnet18{ in_channels = 1, num_classes = 3, pool = "avg", dropout = 0, width = 4 }
    A.truthy(same_weights(model, direct) > 10, "tensors compared")
    A.eq(model:state_dict()["pool.p"], nil, "average pooling has no exponent")
    A.eq(model:state_dict()["fc.weight"]:shape(), { 3, 32 }, "fc: 8 x width features to 3 classes")
    arch.pool = "GeM"
    A.truthy(pipeline.build_model(arch, 3):state_dict()["pool.p"], "GeM has its exponent")
    A.eq(pipeline.build_model(arch, 3).device or "cpu", "cpu")
end)

test("build_model names the setting that does not fit", function()
    local function arch(o)
        local a = { backbone = "resnet18", pool = "GeM", dropout = 0, width = 4, pretrained = false }
        for k, v in pairs(o) do a[k] = v end
        return a
    end
    A.raises(function() pipeline.build_model(arch{ backbone = "vgg11" }, 3) end,
             "architecture.backbone 'vgg11' is not available")
    A.raises(function() pipeline.build_model(arch{ pool = "Max" }, 3) end, "architecture.pool must be GeM or Avg, got 'Max'")
    A.raises(function() pipeline.build_model(arch{ pretrained = true }, 3) end,
             "architecture.pretrained = true: no pretrained weights")
    -- Loading weights right after (prediction) needs no pretrained ones.
    A.truthy(pipeline.build_model(arch{ pretrained = true }, 3, { init = false }), "init = false builds")
end)

test("resolve_device: auto follows cuda_available, a bad name or a missing GPU names the setting", function()
    local gpu = mt.cuda_available()
    A.eq(pipeline.resolve_device("auto"), gpu and "cuda" or "cpu")
    A.eq(pipeline.resolve_device(nil), gpu and "cuda" or "cpu", "nil is auto")
    A.eq(pipeline.resolve_device("cpu"), "cpu")
    A.raises(function() pipeline.resolve_device("tpu", "environment.device") end,
             "environment.device must be auto, cpu or cuda, got 'tpu'")
    A.raises(function() pipeline.resolve_device("gpu") end, "device must be auto, cpu or cuda, got 'gpu'")
    if gpu then
        A.eq(pipeline.resolve_device("cuda"), "cuda")
    else
        A.raises(function() pipeline.resolve_device("cuda", "--device") end,
                 "--device = cuda, but no CUDA device is usable")
    end
end)

return tests
