-- Augmentation building blocks. Each is a plain function over a batch and a
-- random stream (machrt.random), so a script composes them in any order and
-- the result depends only on the stream's seed.
--
--   local augment = require "machrt.augment"
--   augment.mix(wave, target, rng, {probability = 1, concentration = 1, iterations = 1})
--   augment.gain(wave, rng, {min_db = -6, max_db = 6})
--   augment.time_shift(wave, rng, {max_fraction = 0.5})
--   augment.spec_mask(spec, rng, {time_masks = 2, time_width = 40, freq_masks = 2, freq_width = 16})
--
-- wave: {B, frames}; target: {B, C}; spec: {B, n_mels, T} or {B, 1, n_mels, T}.
-- All modify their tensors in place and return them.

local mt = require "machrt"

local M = {}

local function batch_rows(t, what)
    if not mt.is_tensor(t) or t:dim() < 2 then
        error(string.format("augment.%s: expects a batch tensor {B, ...}, got %s", what,
                            mt.is_tensor(t) and ("shape " .. table.concat(t:shape(), "x")) or type(t)), 3)
    end
    return t:size(1)
end

--- Mix audio (docs/REFERENCE.md): with probability `probability` per batch, draw
--- lambda ~ Beta(c, c) per sample, x = lambda * x + (1 - lambda) * x[perm]
--- with a random permutation, targets by the same ratio (mix_target Ratio);
--- `iterations` times. Returns wave, target, and the lambdas of the last
--- iteration (nil when the batch was left alone).
function M.mix(wave, target, rng, opts)
    opts = opts or {}
    local B = batch_rows(wave, "mix")
    if target:size(1) ~= B then
        error(string.format("augment.mix: wave has %d rows but target has %d", B, target:size(1)), 2)
    end
    local p, c, iterations = opts.probability or 1.0, opts.concentration or 1.0, opts.iterations or 1
    if not (c > 0) then error("augment.mix: concentration must be positive, got " .. tostring(c), 2) end
    if opts.target and opts.target ~= "Ratio" then
        error("augment.mix: only mix_target 'Ratio' is supported, got '" .. tostring(opts.target) .. "'", 2)
    end
    if B < 2 or not rng:bernoulli(p) then return wave, target, nil end
    local lambdas
    for _ = 1, iterations do
        local perm = rng:permutation(B)
        lambdas = {}
        for b = 1, B do lambdas[b] = rng:beta(c, c) end
        local w0, t0 = wave:clone(), target:clone()
        for b = 1, B do
            local l = lambdas[b]
            local row, other = wave:select(1, b), w0:select(1, perm[b])
            row:mul_(l):add_(other * (1 - l))
            local trow, tother = target:select(1, b), t0:select(1, perm[b])
            trow:mul_(l):add_(tother * (1 - l))
        end
    end
    return wave, target, lambdas
end

--- Random gain per sample, uniform in [min_db, max_db] decibels.
function M.gain(wave, rng, opts)
    opts = opts or {}
    local B = batch_rows(wave, "gain")
    local lo, hi = opts.min_db or -6, opts.max_db or 6
    if hi < lo then error(string.format("augment.gain: max_db %g < min_db %g", hi, lo), 2) end
    for b = 1, B do wave:select(1, b):mul_(10 ^ (rng:uniform(lo, hi) / 20)) end
    return wave
end

--- Circular time shift per sample by up to max_fraction of the clip either way.
function M.time_shift(wave, rng, opts)
    opts = opts or {}
    local B = batch_rows(wave, "time_shift")
    local n = wave:size(2)
    local max_shift = math.floor((opts.max_fraction or 0.5) * n)
    for b = 1, B do
        local s = rng:integer(-max_shift, max_shift) % n
        if s ~= 0 then
            local row = wave:select(1, b)
            local copy = row:clone()
            row:narrow(1, s + 1, n - s):copy(copy:narrow(1, 1, n - s))
            row:narrow(1, 1, s):copy(copy:narrow(1, n - s + 1, s))
        end
    end
    return wave
end

--- SpecAugment masks: per sample, `time_masks` stripes of up to time_width
--- frames and `freq_masks` of up to freq_width mel bands, set to the
--- sample's mean (in dB the mean is a neutral level; 0 would be loud or quiet
--- depending on the recording).
function M.spec_mask(spec, rng, opts)
    opts = opts or {}
    local B = batch_rows(spec, "spec_mask")
    local nd = spec:dim()
    if nd ~= 3 and nd ~= 4 then
        error("augment.spec_mask: expects {B, n_mels, T} or {B, 1, n_mels, T}, got shape "
              .. table.concat(spec:shape(), "x"), 2)
    end
    local fdim, tdim = nd - 1, nd
    local F, T = spec:size(fdim), spec:size(tdim)
    for b = 1, B do
        local s = spec:select(1, b)
        local fill = s:mean()
        local sf, st = fdim - 1, tdim - 1
        for _ = 1, opts.freq_masks or 0 do
            local w = rng:integer(0, math.min(opts.freq_width or 0, F))
            if w > 0 then s:narrow(sf, rng:integer(1, F - w + 1), w):fill(fill) end
        end
        for _ = 1, opts.time_masks or 0 do
            local w = rng:integer(0, math.min(opts.time_width or 0, T))
            if w > 0 then s:narrow(st, rng:integer(1, T - w + 1), w):fill(fill) end
        end
    end
    return spec
end

--- What the loader's workers apply to a training batch: cfg = {gain = {...},
--- time_shift = {...}, mix = {...}} (each optional), in that order.
function M.apply_batch(wave, target, cfg, rng)
    if cfg.gain then M.gain(wave, rng, cfg.gain) end
    if cfg.time_shift then M.time_shift(wave, rng, cfg.time_shift) end
    if cfg.mix then M.mix(wave, target, rng, cfg.mix) end
    return wave, target
end

return M
