-- machrt.pipeline: the path from a file to the model's input, and the model,
-- as one config describes them. Training, evaluation, prediction, scorers and
-- interpretations all call these, so a clip is heard and seen the same way
-- everywhere.
--
--   local pipeline = require "machrt.pipeline"
--   local device = pipeline.resolve_device(cfg.environment.device, "environment.device")
--   local wave = pipeline.decode(path, { sample_rate = 22050, channel = 1 })  -- {frames}
--   local front = pipeline.front_end(cfg.audio, device)    -- wave {B, frames} -> {B, 1, mels, T}
--   local front = pipeline.front_end(cfg.audio, device, { quiet = true })  -- a trained model's
--   local model = pipeline.build_model(cfg.architecture, #classes, { device = device })
--
-- decode runs inside the loader's worker threads too (machrt.data.clips), so
-- this module loads machrt.nn only when a model is built.

local mt = require "machrt"
local audio = require "machrt.audio"

local M = {}

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

-- The channel of a multi-channel file that opts.channel (default 1) picks,
-- as audio.load takes it; nil for a mono file (its only channel).
local function channel_of(path, info, opts)
    local channel = opts.channel or 1
    if info.channels == 1 then return nil end
    if channel > info.channels then
        fail("%s has %d channels; audio.channel = %d does not exist", path, info.channels, channel)
    end
    return channel
end

--- Decodes `path` to {frames} as the model hears it: channel opts.channel
--- (default 1) of a multi-channel file, the only channel of a mono one,
--- resampled to opts.sample_rate by opts.resampler ("soxr", the default, or
--- "torchaudio": audio.resampler); opts.offset / opts.duration in seconds;
--- opts.info (audio.info of the file) saves reading the header again.
function M.decode(path, opts)
    local info = opts.info or audio.info(path)
    local load = { sample_rate = opts.sample_rate, offset = opts.offset, duration = opts.duration,
                   resampler = M.resampler(opts.resampler), channel = channel_of(path, info, opts) }
    local wave = audio.load(path, load)
    if wave:dim() == 2 then wave = wave:select(1, 1):contiguous() end
    return wave
end

--- The samples decode reads from `path`, as the file holds them, for a
--- cache that keeps them small: the channel decode picks of a 16-bit PCM
--- file at the file's rate, 2 bytes a frame (audio.load_pcm16), or nil for
--- any other encoding. opts as decode's, without offset and duration.
function M.decode_samples(path, opts)
    local info = opts.info or audio.info(path)
    if info.encoding ~= "pcm16" then return nil end
    return audio.load_pcm16(path, channel_of(path, info, opts))
end

--- The wave decode gives (bit for bit) from decode_samples' samples: each
--- use pays the resampling again.
function M.from_samples(samples, path, opts)
    return audio.unpack_pcm16(samples, { sample_rate = opts.sample_rate, resampler = M.resampler(opts.resampler),
                                         name = path })
end

--- The resampler of an audio section's `resampler` value, lower case; when
--- unset, the schema's `before` value (what runs from before the key
--- existed were resampled with), the one fact resumed runs are filled from.
function M.resampler(name)
    return name and name:lower() or require("machrt.schema").reference["audio.resampler"].before
end

-- The notice about all-zero mel filters, in the config's words, once per
-- run: the reference settings (maximum_frequency 16000 Hz at 22050 Hz) make
-- them on purpose, as torchaudio does.
local function zero_filter_notice(a, mel)
    local zero = mel:zero_filters()
    if zero == 0 then return end
    local log = require "machrt.log"
    local nyquist = a.sample_rate / 2
    if a.maximum_frequency > nyquist then
        log.once("mel zero filters", "audio: %d of %d mel filters are all zero: audio.maximum_frequency (%g Hz) "
                 .. "is above the Nyquist frequency (%g Hz) of audio.sample_rate %d (torchaudio gives the "
                 .. "same filters; said once per run)", zero, a.mel_frequency_bins, a.maximum_frequency,
                 nyquist, a.sample_rate)
    else
        log.once("mel zero filters", "audio: %d of %d mel filters are all zero: audio.mel_frequency_bins (%d) "
                 .. "is high for audio.stft_window_size %d (said once per run)", zero, a.mel_frequency_bins,
                 a.mel_frequency_bins, a.stft_window_size)
    end
end

--- The MelSpectrogram of an audio config section: the reference's keys
--- mapped to torchaudio's names (mel_scale and mel_norm, when a section
--- has them, choose the filterbank: "slaney" for librosa's).
function M.mel_spectrogram(a)
    return audio.MelSpectrogram{
        sample_rate = a.sample_rate, n_fft = a.stft_window_size, win_length = a.stft_window_size,
        hop_length = a.hop_size, f_min = a.minimum_frequency, f_max = a.maximum_frequency,
        n_mels = a.mel_frequency_bins, mel_scale = a.mel_scale, norm = a.mel_norm,
    }
end

--- The log-mel front end of an audio config section: wave {B, frames} ->
--- dB spectrogram {B, 1, n_mels, T}. Outputs are reused per batch shape.
--- With a device other than "cpu" the wave is copied there first and the
--- whole front end runs on it (float32 always). All-zero filters are said
--- once per run (log.once), unless opts.quiet: a trained model's front end
--- (prediction, scorers) has them as training had, and training said so.
function M.front_end(a, device, opts)
    if (a.spectrogram_normalization or "No") ~= "No" then
        fail("audio.spectrogram_normalization: only 'No' (dB values as they are) is supported, got '%s'",
             tostring(a.spectrogram_normalization))
    end
    audio.quiet_zero_filter_warning() -- said here, in the config's words
    local mel = M.mel_spectrogram(a)
    if not (opts and opts.quiet) then zero_filter_notice(a, mel) end
    local buffers = {}
    return function(wave)
        if device and device ~= "cpu" then wave = wave:to(device) end
        local B, T = wave:size(1), mel:frames(wave:size(2))
        local key = B .. "x" .. T
        local buf = buffers[key]
        if not buf then
            if #buffers >= 4 then buffers = {} end -- shapes vary (clip lengths): bound the memory
            buffers[#buffers + 1] = key
            local shape = { B, a.mel_frequency_bins, T }
            buf = { power = wave:new_empty(shape), db = wave:new_empty(shape) }
            buffers[key] = buf
        end
        mel(wave, buf.power)
        audio.amplitude_to_db(buf.power, { out = buf.db })
        return buf.db:reshape{ B, 1, a.mel_frequency_bins, T }
    end
end

local POOLS = { GeM = "gem", Avg = "avg", Average = "avg" }

--- The network of an architecture config section. opts.init = false skips
--- the initialisation (weights are loaded right after); otherwise the model
--- is initialised on the CPU (same weights for a seed on every device).
--- opts.device: where the model then moves (default the CPU).
function M.build_model(arch, num_classes, opts)
    opts = opts or {}
    local init = opts.init ~= false
    if init and arch.pretrained then
        fail("architecture.pretrained = true: no pretrained weights ship with machrt (set it to false)")
    end
    local build = require("machrt.nn")[arch.backbone]
    if type(build) ~= "function" then
        fail("architecture.backbone '%s' is not available (resnet18, resnet34)", tostring(arch.backbone))
    end
    local pool = POOLS[arch.pool] or fail("architecture.pool must be GeM or Avg, got '%s'", tostring(arch.pool))
    local model = build{ in_channels = 1, num_classes = num_classes, pool = pool, dropout = arch.dropout,
                         width = arch.width, init = init }
    if opts.device and opts.device ~= "cpu" then model:to(opts.device) end
    return model
end

--- The device of a setting: "cpu", "cuda", or "auto" (cuda when a device
--- is usable, else cpu); nil means "auto". `key` names the setting in
--- errors (default "device").
function M.resolve_device(choice, key)
    key = key or "device"
    local d = choice or "auto"
    if d == "auto" then return mt.cuda_available() and "cuda" or "cpu" end
    if d ~= "cpu" and d ~= "cuda" then
        fail("%s must be auto, cpu or cuda, got '%s'", key, tostring(d))
    end
    if d == "cuda" and not mt.cuda_available() then
        fail("%s = cuda, but no CUDA device is usable (machrt built without CUDA, or no GPU found); "
             .. "use cpu or auto", key)
    end
    return d
end

return M
