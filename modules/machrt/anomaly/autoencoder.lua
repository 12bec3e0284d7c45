-- The DCASE 2020 Task 2 baseline detector: one autoencoder per machine type
-- on 5-frame log-mel vectors, trained on normal clips; a clip's score is the
-- mean squared reconstruction error of its vectors.
--
--   local vectors = ae.frame_vectors(mel, 5)      -- {B, 1, M, T} -> {B (T - 4), 5 M}
--   local models, train_scores = ae.train_all(cfg, split, front, device, dir, resume)   -- resume: --resume given
--   local scores = ae.score(models, cfg, items, front, device)
--   local score = ae.reconstruction_error(model, vectors)
local mt = require "machrt"
local sys = require "machrt.sys"
local nn = require "machrt.nn"
local optim = require "machrt.optim"
local folds = require "machrt.data.folds"
local train = require "machrt.train"
local log = require "machrt.log"

local M = {}

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

--- The rows of a list of 2-D tensors (same width), one after the other.
function M.stack_rows(list)
    local n = 0
    for _, t in ipairs(list) do n = n + t:size(1) end
    local out, at = list[1]:new_empty{ n, list[1]:size(2) }, 1
    for _, t in ipairs(list) do
        out:narrow(1, at, t:size(1)):copy(t)
        at = at + t:size(1)
    end
    return out
end

--- DCASE's vectors: row t of clip b is frames t .. t + frames - 1 of its
--- log-mel picture, concatenated frame after frame (frame-major, as the
--- baseline's vector_array[:, n_mels * t : n_mels * (t + 1)]).
function M.frame_vectors(mel, frames)
    local B, bins, T = mel:size(1), mel:size(3), mel:size(4)
    local V = T - frames + 1
    if V < 1 then fail("autoencoder: a clip of %d frames is shorter than autoencoder.frames = %d", T, frames) end
    local out = mel:new_empty{ B * V, bins * frames }
    for b = 1, B do
        local m = mel:select(1, b):select(1, 1)
        local rows = out:narrow(1, (b - 1) * V + 1, V)
        for t = 0, frames - 1 do
            rows:narrow(2, t * bins + 1, bins):copy(m:narrow(2, t + 1, V):transpose(1, 2))
        end
    end
    return out
end

-- The items of one machine type.
local function subset(items, wanted_type)
    local s = { files = {}, rows = {}, targets = {}, index = {} }
    for i, t in ipairs(items.type) do
        if t == wanted_type then
            local k = #s.files + 1
            s.files[k], s.rows[k], s.targets[k], s.index[k] = items.files[i], items.rows[i], items.targets[i], i
        end
    end
    return s
end

-- Calls fn(k, vectors) for every clip k of `items` (whole clips, in order).
local function each_clip(cfg, items, front, frames, fn)
    local loaders <close> = require("machrt.anomaly.data").chunk_loader(cfg, items)
    for _, batch in loaders.val:epoch(0) do
        for _, why in ipairs(batch.skipped) do log.info("skipped %s", why) end
        if batch.chunks then
            local vec = M.frame_vectors(front(batch.chunks), frames)
            local per_chunk = vec:size(1) // batch.chunks:size(1)
            local at = 1
            for j, k in ipairs(batch.indices) do
                local n = batch.counts[j] * per_chunk
                fn(k, vec:narrow(1, at, n))
                at = at + n
            end
        end
    end
end

--- A clip's anomaly score: the mean squared error of the reconstructions
--- of its vectors (rows of `vectors`).
function M.reconstruction_error(model, vectors)
    local d = model:forward(vectors) - vectors
    local v = d:mul_(d):mean()
    d:release() -- at once: left to the garbage collector, clip-sized blocks pile up
    return v
end

-- Every training vector of one machine type, on the CPU, in clip order,
-- and where each clip's rows are ({item = k of `items`, first =, count =}).
local function training_vectors(cfg, items, front, frames)
    local parts, clips, total = {}, {}, 0
    each_clip(cfg, items, front, frames, function(k, v)
        parts[#parts + 1] = v:to("cpu"):clone()
        clips[#clips + 1] = { item = k, first = total + 1, count = v:size(1) }
        total = total + v:size(1)
    end)
    if total == 0 then fail("autoencoder: no training clip could be read") end
    return M.stack_rows(parts), clips
end

local function mse_in_chunks(model, X, device)
    local sum, n = 0, X:size(1)
    for at = 1, n, 4096 do
        local x = X:narrow(1, at, math.min(4096, n - at + 1)):to(device)
        local d = model:forward(x) - x
        sum = sum + (d * d):sum()
    end
    return sum / (n * X:size(2))
end

local function model_dir(dir, machine_type) return dir .. "/autoencoder_" .. machine_type:gsub("[^%w_.-]", "_") end

--- A new autoencoder of the config (keras' initialisation, drawn after
--- mt.manual_seed(seed) when a seed is given).
function M.build(cfg, input, seed)
    if seed then mt.manual_seed(seed) end
    local ae = cfg.autoencoder
    return nn.dcase_autoencoder{ input = input, hidden = ae.hidden, bottleneck = ae.bottleneck }:flatten_parameters()
end

-- Trains (or resumes) the autoencoder of one machine type; returns it and
-- the scores of its training clips (into train_scores, by split.train
-- index), computed from the vectors it trained on: the clips are not read
-- and transformed a second time.
local function train_type(cfg, split, front, device, dir, k, machine_type, resume, train_scores)
    local ae, env = cfg.autoencoder, cfg.environment
    local items = subset(split.train, machine_type)
    local X, clips = training_vectors(cfg, items, front, ae.frames)
    -- As keras' fit(validation_split = v): the last v of the vectors only
    -- measure the validation loss; the rest train, shuffled every epoch.
    local nval = math.floor(X:size(1) * ae.validation_split)
    local ntrain = X:size(1) - nval
    if ntrain < 2 then fail("autoencoder %s: %d training vectors, too few for batch norm", machine_type, ntrain) end
    local model = M.build(cfg, X:size(2), env.seed + k)
    if device ~= "cpu" then model:to(device) end
    local opt = optim.AdamW(model:parameters(), { lr = ae.learning_rate, eps = 1e-7, weight_decay = 0 })
    local mdir = model_dir(dir, machine_type)
    -- A model folder's checkpoint carries the run's config.json and the
    -- machine type as its one class; it is read only on --resume.
    local state = resume and train.load_checkpoint(mdir, model, opt, { cfg = cfg, classes = { machine_type },
                                                                       epochs = ae.epochs, epochs_key = "autoencoder.epochs" })
        or { epoch = 0, step = 0, history = {}, classes = { machine_type } }
    if state.epoch > 0 then log.info("autoencoder %s: resuming after epoch %d", machine_type, state.epoch) end
    local stepper = train.Stepper{ model = model, loss = nn.MSELoss(), optimizer = opt, state = state,
                                   set_lr = function() return ae.learning_rate end, checkpoint_dir = mdir,
                                   cfg = { training = { grad_accumulation = 1, gradient_clip = 0 } } }
    local nb = (ntrain + ae.batch_size - 1) // ae.batch_size
    -- A batch is gathered row by row into one reused buffer; the row views
    -- are made once, so a row costs one copy call (the step itself is only
    -- a few milliseconds).
    local rows, batch = {}, mt.empty{ math.min(ae.batch_size, ntrain), X:size(2) }
    for i = 1, ntrain do rows[i] = X:select(1, i) end
    local slots = {}
    for j = 1, batch:size(1) do slots[j] = batch:select(1, j) end
    sys.mkdir(mdir)
    for epoch = state.epoch + 1, ae.epochs do
        local bar = log.progress{ title = string.format("autoencoder %s epoch %d/%d", machine_type, epoch, ae.epochs),
                                  total = nb, fields = { "loss" } }
        stepper:start_epoch(epoch)
        -- The order of an epoch depends only on (seed, type, epoch): a resumed run draws the same.
        local order = folds.permutation(ntrain, (env.seed * 7919 + k) * 1000 + epoch)
        for b = 1, nb do
            local first, count = (b - 1) * ae.batch_size, math.min(ae.batch_size, ntrain - (b - 1) * ae.batch_size)
            if count >= 2 then -- batch norm needs two rows; keras' last batch of one is dropped
                for j = 1, count do slots[j]:copy(rows[order[first + j]]) end
                local xb = count == batch:size(1) and batch or batch:narrow(1, 1, count)
                xb = xb:to(device)
                stepper:step(xb, xb, b)
                bar:update(b, { loss = stepper:mean_loss() }, count)
            end
        end
        local seconds = bar:finish()
        local row = { epoch = epoch, step = state.step, lr = ae.learning_rate, train_loss = stepper:mean_loss(),
                      seconds = seconds, samples_per_second = stepper.seen / seconds }
        if nval > 0 then
            model:evaluate()
            row.val_loss = mse_in_chunks(model, X:narrow(1, ntrain + 1, nval), device)
            model:training()
        end
        state.epoch = epoch
        state.history[#state.history + 1] = row
        train.save_checkpoint(mdir, model, opt, state)
        train.write_log(mdir, state.history)
    end
    local last = state.history[#state.history]
    if last then
        log.info("autoencoder %s: %d vectors, train loss %.4f%s", machine_type, ntrain, last.train_loss,
                 last.val_loss and string.format(", validation loss %.4f", last.val_loss) or "")
    end
    model:evaluate()
    for _, c in ipairs(clips) do
        train_scores[items.index[c.item]] = M.reconstruction_error(model, X:narrow(1, c.first, c.count):clone():to(device))
    end
    return model
end

local function check_scored(items, scores)
    for i = 1, #items.files do
        if not scores[i] then fail("autoencoder: clip %s could not be scored (unreadable)", items.files[i]) end
    end
end

--- One trained autoencoder per machine type of the training data, and the
--- score of every training clip (by split.train index; nil for an
--- unreadable one).
function M.train_all(cfg, split, front, device, dir, resume)
    local models, train_scores = {}, {}
    for k, t in ipairs(split.types) do
        models[t] = train_type(cfg, split, front, device, dir, k, t, resume, train_scores)
    end
    check_scored(split.train, train_scores)
    return models, train_scores
end

--- The anomaly score of every clip of `items`: the mean squared error of
--- its vectors' reconstructions by its type's autoencoder.
function M.score(models, cfg, items, front, device)
    local scores = {}
    each_clip(cfg, items, front, cfg.autoencoder.frames, function(i, v)
        scores[i] = M.reconstruction_error(models[items.type[i]], v:to(device))
    end)
    check_scored(items, scores)
    return scores
end

M.model_dir = model_dir
return M
