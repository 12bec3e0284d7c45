-- Audio clips of a dataframe, as the loader's workers read them: decode
-- (channel pick), resample, cache, then a random crop (training) or fixed
-- chunks (evaluation), batched.
--
-- This module is the job module of `machrt.data.loader`: it runs inside each
-- worker thread's own Lua state, so everything it receives is plain data
-- (config below) and everything it returns is tensors and plain values.
--
-- config = {
--   data_folder = "...", files = {"fan/id_00/...wav", ...}, rows = {csv row numbers},
--   targets = {{0, 1, 0, 0}, ...},        -- per clip
--   sample_rate = 22050, channel = 1,     -- channel pick for multi-channel files
--   resampler = "soxr" | "torchaudio",    -- pipeline.decode
--   mode = "train" | "chunks",
--   chunk_seconds = 10,                   -- train: crop/pad length; chunks: chunk length
--   max_seconds = 600,                    -- chunks: at most this much of a clip
--   cache = "memory" | "disk" | "none", cache_folder = "...",
--   on_error = "fail" | "skip",
--   seed = 1, augment = {...}  (see machrt.augment.apply_batch)
-- }
-- job = {indices = {...}, epoch = e, batch = b}
-- A batch's `timing` holds the seconds its parts took in the worker
-- (decode: reading, resampling, the cache; crop; augmentation), for
-- machrt.profile.

local mt = require "machrt"
local sys = require "machrt.sys"
local audio = require "machrt.audio"
local workers = require "machrt.workers"
local random = require "machrt.random"
local pipeline = require "machrt.pipeline"
local run_folder = require "machrt.run_folder"

local M = {}

-- FNV-1a over the cache key: a file name for the disk cache.
local function hash_hex(s)
    local h = -3750763034362895579 -- 14695981039346656037 as a signed 64-bit integer
    for i = 1, #s do h = (h ~ s:byte(i)) * 1099511628211 end
    return string.format("%016x", h)
end

-- The resampler is part of the key: a wave cached by one is never handed
-- out for the other.
local function cache_key(path, cfg)
    return string.format("%s|sr=%d|ch=%d|rs=%s", path, cfg.sample_rate, cfg.channel,
                         pipeline.resampler(cfg.resampler))
end

local function disk_cached(path, key, cfg)
    local st = sys.stat(path)
    if not st then return nil end
    local file = string.format("%s/%s.safetensors", cfg.cache_folder, hash_hex(key))
    local ok, tensors, meta = pcall(mt.load, file)
    -- The checksum (sealed as a checkpoint is): a damaged cache file is
    -- decoded again, never trained on.
    if ok and meta and meta.key == key and tonumber(meta.size) == st.size and
        meta.mtime == string.format("%.9f", st.mtime) and tensors.wave and run_folder.intact(tensors, meta) then
        return tensors.wave
    end
    return nil, file, st
end

--- The decoded, resampled wave of `path` ({frames}), through the cache.
--- The memory cache keeps a 16-bit PCM file's samples as the file holds them
--- (pipeline.decode_samples: 2 bytes a frame at the file's rate, where the
--- float32 wave at 22050 Hz of a 16 kHz file takes 5.5) and resamples them
--- at every load, to the same wave bit for bit; other files, and the disk
--- cache's, are kept as float32 waves.
function M.load_wave(path, cfg)
    local key = cache_key(path, cfg)
    local cache = cfg.cache or "memory"
    if cache ~= "none" then
        local hit = workers.cache_get(key)
        if hit then return hit:dtype() == "int64" and pipeline.from_samples(hit, path, cfg) or hit end
    end
    if cache == "memory" then
        local samples = pipeline.decode_samples(path, cfg)
        if samples then
            workers.cache_put(key, samples)
            return pipeline.from_samples(samples, path, cfg)
        end
    end
    local wave, file, st
    if cache == "disk" then wave, file, st = disk_cached(path, key, cfg) end
    if not wave then
        wave = pipeline.decode(path, cfg)
        if file then
            -- A cache that cannot be written costs speed, not the clip.
            local meta = { key = key, size = tostring(st.size), mtime = string.format("%.9f", st.mtime) }
            pcall(mt.save, file, { wave = wave }, run_folder.seal({ wave = wave }, meta))
        end
    end
    if cache ~= "none" then workers.cache_put(key, wave) end
    return wave
end

-- Copies a random window of `frames` samples of wave into row (zero-padded
-- at the end when the clip is shorter, as the reference does).
local function crop_into(row, wave, frames, rng)
    local n = wave:size(1)
    if n >= frames then
        local start = rng:integer(1, n - frames + 1)
        row:copy(wave:narrow(1, start, frames))
    else
        row:fill(0)
        row:narrow(1, 1, n):copy(wave)
    end
end

--- A file named in a dataframe, found from the data folder (absolute paths
--- and an empty folder leave it as it is).
function M.resolve(data_folder, file)
    if file:sub(1, 1) == "/" or data_folder == nil or data_folder == "" then return file end
    return data_folder .. "/" .. file
end

function M.path_of(cfg, i) return M.resolve(cfg.data_folder, cfg.files[i]) end

-- Loads clip i or, under on_error = "skip", returns nil and the reason.
local function load_clip(cfg, i)
    local path = M.path_of(cfg, i)
    local ok, wave = pcall(M.load_wave, path, cfg)
    if ok then return wave end
    -- The message names the file; where in machrt it was raised does not help.
    local why = tostring(wave):gsub("^[^:\n]*%.lua:%d+: ", "")
    local msg = string.format("row %d (%s): %s", cfg.rows[i], cfg.files[i], why)
    if cfg.on_error == "skip" then return nil, msg end
    error(msg, 0)
end

local function train_batch(cfg, job, augment)
    local frames = math.floor(cfg.chunk_seconds * cfg.sample_rate + 0.5)
    local kept, skipped, waves = {}, {}, {}
    local t0 = mt.clock()
    for _, i in ipairs(job.indices) do
        local wave, why = load_clip(cfg, i)
        if wave then
            kept[#kept + 1] = i
            waves[#waves + 1] = wave
        else
            skipped[#skipped + 1] = why
        end
    end
    local B, C = #kept, #cfg.targets[1]
    local t1 = mt.clock()
    local batch = { indices = kept, skipped = skipped, timing = { decode = t1 - t0 } }
    if B == 0 then return batch end
    local wave = mt.empty{ B, frames }
    local target = mt.empty{ B, C }
    for b, i in ipairs(kept) do
        -- Per row, not per batch position: a clip's crop is the same whatever
        -- batch it lands in.
        crop_into(wave:select(1, b), waves[b], frames, random.stream(cfg.seed, job.epoch, i, 1))
        local t = cfg.targets[i]
        for c = 1, C do target:set(t[c], b, c) end
    end
    local t2 = mt.clock()
    batch.timing.crop = t2 - t1
    if augment then
        augment.apply_batch(wave, target, cfg.augment, random.stream(cfg.seed, job.epoch, job.batch, 2))
        batch.timing.augmentation = mt.clock() - t2
    end
    batch.wave, batch.target = wave, target
    return batch
end

-- Every clip of the job cut into fixed chunks (the `Fix` method); counts[k]
-- = chunks of the k-th clip, in order.
local function chunk_batch(cfg, job)
    local frames = math.floor(cfg.chunk_seconds * cfg.sample_rate + 0.5)
    local kept, skipped, parts, counts, total = {}, {}, {}, {}, 0
    for _, i in ipairs(job.indices) do
        local wave, why = load_clip(cfg, i)
        if wave then
            local chunks = audio.chunks(wave, cfg.sample_rate, cfg.chunk_seconds,
                                        { max_seconds = cfg.max_seconds })
            kept[#kept + 1] = i
            parts[#parts + 1] = chunks
            counts[#counts + 1] = chunks:size(1)
            total = total + chunks:size(1)
        else
            skipped[#skipped + 1] = why
        end
    end
    local batch = { indices = kept, skipped = skipped, counts = counts }
    if total == 0 then return batch end
    local all = mt.empty{ total, frames }
    local at = 1
    for k, part in ipairs(parts) do
        all:narrow(1, at, counts[k]):copy(part)
        at = at + counts[k]
    end
    batch.chunks = all
    local C = #cfg.targets[1]
    local target = mt.empty{ #kept, C }
    for b, i in ipairs(kept) do
        for c = 1, C do target:set(cfg.targets[i][c], b, c) end
    end
    batch.target = target
    return batch
end

--- The factory the worker pool calls in each worker: returns the job function.
function M.factory(cfg)
    cfg.channel = cfg.channel or 1
    if cfg.cache == "disk" then
        if not cfg.cache_folder or cfg.cache_folder == "" then
            error("clips: cache = 'disk' needs a cache_folder", 0)
        end
        sys.mkdir(cfg.cache_folder)
    end
    local augment = cfg.augment and next(cfg.augment) and require "machrt.augment" or nil
    if cfg.mode == "chunks" then
        return function(job) return chunk_batch(cfg, job) end
    end
    return function(job) return train_batch(cfg, job, augment) end
end

return setmetatable(M, { __call = function(_, cfg) return M.factory(cfg) end })
