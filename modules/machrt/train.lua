-- Helpers of experiment scripts: each does one step of the reference recipe
-- (docs/REFERENCE.md) so that experiments/resnet34.lua reads top to bottom.
--
--   local cfg, run = train.setup(defaults, arg[, keys])  -- CLI, checks, resume, seed, data, threads
--   local split = train.prepare_data(cfg, fold)          -- dataframe, labels, fold split
--   local loaders = train.loaders(cfg, split)            -- training and validation loaders
--   local opt, set_lr = train.optimizer(cfg, model, steps_per_epoch)
--   local stepper = train.Stepper{model =, loss =, optimizer = opt, set_lr =, cfg =, state =}
--   local ev = train.evaluate(cfg, model, front, loaders.val, split)
--   train.save_checkpoint(dir, state) / train.load_checkpoint(dir, model, opt)
--   train.write_log(dir, history) / train.write_evaluation(dir, cfg, split, ev, epoch)
--
-- The front end, the model and the device come from machrt.pipeline,
-- shared with inference; pictures from machrt.plot.

local mt = require "machrt"
local sys = require "machrt.sys"
local nn = require "machrt.nn"
local optim = require "machrt.optim"
local data = require "machrt.data"
local csv = require "machrt.data.csv"
local config = require "machrt.config"
local schema = require "machrt.schema"
local metrics = require "machrt.metrics"
local random = require "machrt.random"
local log = require "machrt.log"
local infer = require "machrt.infer"

local M = {}

M.CHECKPOINT = "checkpoint.safetensors"
M.CONFIG = "config.json"
M.DEFAULT_DATA = "data/synthetic"

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

local function file_exists(path)
    local st = sys.stat(path)
    return st ~= nil and not st.is_dir
end

-- ---- setup ---------------------------------------------------------------

--- Parses the command line, checks every setting against `keys` (default
--- machrt.schema.reference; an experiment with keys of its own passes
--- schema.with{...}), resolves the seed and the data, sets threads and
--- returns cfg and run = {dir_of(fold), folds = {...}, resume = dir|nil}.
function M.setup(defaults, args, keys)
    keys = keys or schema.reference
    local cfg, opts = config.from_args(defaults, args)
    -- Before any work, and before --help: a sweep checks its trials with it.
    config.validate(cfg, keys)
    if opts.help then
        io.write("usage: machrt experiments/<name>.lua [--section.key=value ...] [--resume <run folder>]\n",
                 "       [--traceback]  (a Lua traceback with every error; also MACHRT_TRACEBACK=1)\n\n",
                 "settings (defaults), each with its allowed values:\n  ",
                 table.concat(config.help(cfg, keys), "\n  "), "\n")
        os.exit(0)
    end
    local run = { resume = opts.resume }
    if opts.resume then
        local text = assert(io.open(opts.resume .. "/" .. M.CONFIG)
            or fail("--resume %s: no %s there (is it a run folder runs/<experiment>/fold<k>?)",
                    opts.resume, M.CONFIG)):read("a")
        local saved = sys.json_decode(text, opts.resume .. "/" .. M.CONFIG)
        for _, o in ipairs(opts.overrides) do
            if not o.path:match("^environment%.") then
                fail("--resume continues a run with its saved settings; only environment.* may be "
                     .. "overridden, got --%s", o.path)
            end
        end
        local resumed = config.copy(defaults)
        for section, v in pairs(saved) do
            if type(v) == "table" and type(resumed[section]) == "table" and v[1] == nil then
                for k, x in pairs(v) do resumed[section][k] = x end
            else
                resumed[section] = v
            end
        end
        for _, o in ipairs(opts.overrides) do config.set(resumed, o.path, o.text) end
        cfg = config.validate(resumed, keys)
    end
    local env, ds = cfg.environment, cfg.dataset
    if env.seed == -1 then
        env.seed = random.draw_seed()
        log.info("environment.seed = -1: drew seed %d (recorded in the run's %s)", env.seed, M.CONFIG)
    end
    if (env.threads or 0) > 0 then mt.set_num_threads(env.threads) end
    if ds.data_folder == "" and ds.train_dataframe == "" then
        local synth = require "machrt.synth"
        local info = synth.ensure(M.DEFAULT_DATA)
        ds.data_folder, ds.train_dataframe = info.data_folder, info.csv
        log.info("dataset: the built-in synthetic corpus in %s (no dataset.data_folder given)", ds.data_folder)
    end
    run.folds = {}
    for _, f in ipairs(ds.folds) do run.folds[#run.folds + 1] = math.tointeger(tonumber(f)) end
    if opts.resume and #run.folds > 1 then
        -- A resumed run continues the folder it was given.
        local k = math.tointeger(tonumber(opts.resume:match("fold(%d+)/?$")))
        run.folds = { k or run.folds[1] }
    end
    -- How to continue a run: the same host and script (train.on_interrupt).
    run.host, run.script = args and args[-1] or "machrt", args and args[0] or "experiments/<name>.lua"
    function run.dir_of(fold)
        if opts.resume then return (opts.resume:gsub("/$", "")) end
        return string.format("%s/%s/fold%d", cfg.output_directory, cfg.experiment_name, fold)
    end
    return cfg, run
end

-- The error the host raises on Ctrl-C (runtime/main.c).
M.INTERRUPTED = "interrupted (Ctrl-C)"

--- A to-be-closed guard over a fold's training: when Ctrl-C stops it, says
--- what the checkpoint in `dir` holds (it is written atomically, so it is
--- the last finished epoch's) and the command that continues the run.
function M.on_interrupt(run, dir, state)
    return setmetatable({}, { __close = function(_, err)
        -- Layers add their names to errors passing through them: look inside.
        if not tostring(err):find(M.INTERRUPTED, 1, true) then return end
        local held = state.epoch > 0
            and string.format("%s/%s holds epoch %d", dir, M.CHECKPOINT, state.epoch)
            or "no epoch had finished; the run starts over"
        io.stderr:write(string.format("machrt: training stopped: %s. Continue it with:\n  %s %s --resume %s\n",
                                      held, run.host, run.script, dir))
    end })
end

-- ---- data ----------------------------------------------------------------

-- The clips of a dataframe: files, one target row per clip, the classes'
-- indices, and each clip's row number in its CSV (the __row column).
local function items_of(df, cfg, enc)
    local rows = {}
    for i, r in ipairs(df:column("__row")) do rows[i] = math.tointeger(tonumber(r)) end
    return { df = df, files = df:column(cfg.dataset.audio_column), targets = enc.targets:totable(),
             index = enc.index, rows = rows }
end

-- Row numbers as the user sees them in the CSV (1 = first data row).
local function with_row_ids(df)
    df:add_column("__row", (function()
        local ids = {}
        for i = 1, df:nrows() do ids[i] = tostring(i) end
        return ids
    end)())
    return df
end

-- A dataframe the run cannot learn from or score on: no data rows.
local function require_rows(df, key)
    if df:nrows() == 0 then fail("%s %s has no data rows (only a header)", key, df.source) end
end

-- A classifier needs two classes: with one, every prediction is right and
-- nothing is learnt.
local function require_two_classes(df, ds, classes)
    if #classes >= 2 then return end
    fail("%s: label column '%s' holds a single class ('%s') in its %d rows: a classifier "
         .. "needs at least two classes", df.source, ds.label_columns[1], tostring(classes[1]),
         df:nrows())
end

--- Reads the dataframe(s), encodes labels and splits off the validation
--- fold. Returns {classes, train = items, val = items, k}.
function M.prepare_data(cfg, fold)
    local ds = cfg.dataset
    local df = with_row_ids(data.read_csv(ds.train_dataframe))
    require_rows(df, "dataset.train_dataframe")
    df:require_columns({ ds.audio_column }, "dataset.audio_column")
    df:require_columns(ds.label_columns, "dataset.label_columns")
    if ds.data_sample < 1 then df = df:sample(ds.data_sample, cfg.environment.seed) end
    local enc = data.encode_labels(df, ds.label_columns)
    require_two_classes(df, ds, enc.classes)
    local train_df, val_df, k
    if ds.validation_strategy == "kfold" then
        local fold_ids
        fold_ids, k = data.assign_folds(df, ds)
        train_df, val_df = data.split(df, fold_ids, fold)
    else -- custom (machrt.schema: the strategies, and custom's validation_dataframe)
        train_df = df
        val_df = with_row_ids(data.read_csv(ds.validation_dataframe))
        require_rows(val_df, "dataset.validation_dataframe")
        val_df:require_columns({ ds.audio_column }, "dataset.audio_column")
        val_df:require_columns(ds.label_columns, "dataset.label_columns")
    end
    local classes = #ds.label_columns == 1 and enc.classes or nil
    local function encode(part)
        return items_of(part, cfg, data.encode_labels(part, ds.label_columns, classes))
    end
    return { classes = enc.classes, train = encode(train_df), val = encode(val_df), k = k }
end

-- ---- loaders -------------------------------------------------------------

--- Training batches one ahead on a device: while the step computes on
--- batch b, batch b + 1's wave and target already travel to the device on
--- the copy stream (tensor:to(device, {async = true}): staged in pinned
--- memory, the device's first use of them waits for the copy). `iter` is a
--- loader's epoch iterator; on the CPU it is returned as it is.
function M.prefetch(iter, device)
    if not device or device == "cpu" then return iter end
    local function move(b, batch)
        if batch then
            if batch.wave then batch.wave = batch.wave:to(device, { async = true }) end
            if batch.target then batch.target = batch.target:to(device, { async = true }) end
        end
        return b, batch
    end
    local nb, nbatch = move(iter())
    return function()
        if nb == nil then return nil end
        local b, batch = nb, nbatch
        nb, nbatch = move(iter())
        return b, batch
    end
end

--- One line on a device's memory traffic: cudaMalloc calls, pinned staging
--- allocations and batches copied ahead (nil on the CPU).
function M.device_memory_line(device)
    local s = device ~= "cpu" and mt.memory_stats()[device]
    if not s then return nil end
    return string.format("%s memory: %d cudaMalloc calls, %d pinned staging buffers (%.1f MiB), "
        .. "%d batch tensors copied ahead on the copy stream", device, s.mallocs, s.host_allocs,
        s.pinned / 2^20, s.async_copies)
end

local function clip_config(cfg, items, mode, chunk_seconds)
    local ds, aug = cfg.dataset, cfg.augmentation
    local augment = {}
    if mode == "train" and aug.mix_audio ~= "Disabled" then
        if aug.mix_audio ~= "Enabled" then
            fail("augmentation.mix_audio must be 'Enabled' or 'Disabled', got '%s'", tostring(aug.mix_audio))
        end
        augment.mix = { probability = aug.mix_probability, concentration = aug.mix_concentration,
                        iterations = aug.mix_iterations, target = aug.mix_target }
    end
    return {
        data_folder = ds.data_folder, files = items.files, rows = items.rows, targets = items.targets,
        sample_rate = cfg.audio.sample_rate, channel = cfg.audio.channel, mode = mode,
        chunk_seconds = chunk_seconds, max_seconds = cfg.prediction.max_inference_chunk_seconds,
        cache = ds.cache, cache_folder = ds.cache_folder, on_error = ds.on_error,
        seed = cfg.environment.seed, augment = augment,
    }
end

--- The training loader (random crops, shuffled, drop_last) and the
--- validation loader (Fix chunks, in order).
function M.loaders(cfg, split)
    local ds, tr, env = cfg.dataset, cfg.training, cfg.environment
    if ds.on_error ~= "fail" and ds.on_error ~= "skip" then
        fail("dataset.on_error must be 'fail' or 'skip', got '%s'", tostring(ds.on_error))
    end
    if ds.cache == "disk" then sys.mkdir(ds.cache_folder) end
    local train = data.Loader{
        name = "training loader", module = "machrt.data.clips",
        config = clip_config(cfg, split.train, "train", cfg.audio.training_chunk_seconds),
        size = #split.train.files, batch_size = tr.batch_size, shuffle = true,
        drop_last = tr.drop_last_batch, seed = env.seed, workers = env.number_of_workers,
    }
    local val = data.Loader{
        name = "validation loader", module = "machrt.data.clips",
        config = clip_config(cfg, split.val, "chunks", cfg.prediction.inference_chunk_seconds),
        size = #split.val.files, batch_size = tr.batch_size, shuffle = false, drop_last = false,
        seed = env.seed, workers = env.number_of_workers,
    }
    if cfg.prediction.inference_chunk_method ~= "Fix" then
        fail("prediction.inference_chunk_method: only 'Fix' is supported, got '%s'",
             tostring(cfg.prediction.inference_chunk_method))
    end
    return setmetatable({ train = train, val = val }, {
        __close = function(l) l.train:close(); l.val:close() end })
end

-- ---- model and optimizer ----------------------------------------------------

--- AdamW (or SGD) over parameter groups (no decay on biases and norm
--- weights; differential rate for the named layers) and lr_at(step), the
--- rate for optimizer step `step` (1-based): linear warmup, then cosine to 0.
function M.optimizer(cfg, model, steps_per_epoch)
    local t = cfg.training
    local groups = optim.param_groups(model:parameters(), {
        lr = t.learning_rate, weight_decay = t.weight_decay,
        differential_lr = #t.differential_learning_rate_layers > 0 and t.differential_learning_rate or nil,
        differential_layers = #t.differential_learning_rate_layers > 0 and t.differential_learning_rate_layers or nil,
    })
    -- The names and ranges of these settings are machrt.schema's (train.setup).
    local opt = t.optimizer == "SGD" and optim.SGD(groups, { momentum = 0.9 }) or optim.AdamW(groups)
    local total = steps_per_epoch * t.epochs // t.grad_accumulation
    if total < 1 then
        fail("training.grad_accumulation = %d is more than the %d batches of the run (%d per epoch, "
             .. "%d epochs): no optimizer step would be taken", t.grad_accumulation,
             steps_per_epoch * t.epochs, steps_per_epoch, t.epochs)
    end
    local warmup = math.floor(t.warmup_epochs * steps_per_epoch / t.grad_accumulation + 0.5)
    local factor
    if t.schedule == "Constant" then
        factor = function(k) return warmup > 0 and k < warmup and k / warmup or 1 end
    else
        factor = optim.cosine{ base_lr = 1, warmup_steps = warmup, total_steps = total }
    end
    local function set_lr(step)
        for _, g in ipairs(opt.param_groups) do g.lr = g.initial_lr * factor(step - 1) end
        return opt.param_groups[1].lr
    end
    return opt, set_lr, total
end

--- Mixed precision (environment.mixed_precision_training on a CUDA device):
--- the convolution / linear GEMMs take fp16 operands (fp32 accumulation,
--- fp32 master weights and gradients) and the loss is scaled dynamically
--- (machrt.amp). Returns the loss scaler, or nil where training stays fp32.
function M.mixed_precision(cfg, device)
    if not cfg.environment.mixed_precision_training or device == "cpu" then return nil end
    mt.set_gemm_precision("fp16")
    return require("machrt.amp").GradScaler()
end

--- The training step (forward, loss, accumulation, loss scaling, clipping,
--- learning rate, optimizer step): see machrt.stepper.
M.Stepper = require("machrt.stepper").new

--- The loss of training.loss_function.
function M.loss(cfg)
    local name = cfg.training.loss_function
    if name == "BCE" then return nn.BCEWithLogitsLoss() end
    fail("training.loss_function: only 'BCE' (BCE with logits on one-hot or mixed targets) is "
         .. "supported, got '%s'", tostring(name))
end

-- ---- evaluation ----------------------------------------------------------------

local function bce_of_probs(probs, targets)
    local n, C = probs:size(1), probs:size(2)
    local sum = 0
    for i = 1, n do
        for c = 1, C do
            local p = math.min(math.max(probs:get(i, c), 1e-7), 1 - 1e-7)
            local y = targets:get(i, c)
            sum = sum - (y * math.log(p) + (1 - y) * math.log(1 - p))
        end
    end
    return sum / (n * C)
end

--- Predicts every validation clip (Fix chunks, mean of the chunks' sigmoid
--- outputs) and scores it. Returns {probs = {n, C}, loss, f1, accuracy,
--- roc_auc, per_class, confusion, predicted, rows, skipped}.
function M.evaluate(cfg, model, front, loader, split)
    -- Evaluation shapes differ from training's: hand training's activations
    -- back first, and evaluation's afterwards, so the two never add up.
    model:clear_state()
    mt.empty_cache()
    model:evaluate()
    -- On a device, inference GEMMs follow environment.mixed_precision_inference.
    local precision = model.device == "cuda"
        and mt.set_gemm_precision(cfg.environment.mixed_precision_inference and "fp16" or "fp32")
    local n, C = #split.val.files, #split.classes
    local probs, targets = mt.zeros{ n, C }, mt.zeros{ n, C }
    local kept, skipped = {}, {}
    local filled = 0
    for _, batch in loader:epoch(0) do
        for _, why in ipairs(batch.skipped) do
            skipped[#skipped + 1] = why
            -- Said now, as training does: scores over fewer clips must not pass unnoticed.
            log.info("validation: skipped %s", why)
        end
        if batch.chunks then
            local p = infer.clip_probabilities(model, front, batch.chunks, batch.counts)
            for k, i in ipairs(batch.indices) do
                filled = filled + 1
                kept[filled] = i
                probs:select(1, filled):copy(p:select(1, k))
                targets:select(1, filled):copy(batch.target:select(1, k))
            end
        end
    end
    model:clear_state()
    mt.empty_cache()
    model:training()
    if precision then mt.set_gemm_precision(precision) end
    if filled == 0 then fail("validation: no clip could be read (%d skipped)", #skipped) end
    probs, targets = probs:narrow(1, 1, filled):contiguous(), targets:narrow(1, 1, filled):contiguous()
    local true_index = {}
    for k, i in ipairs(kept) do true_index[k] = split.val.index[i] end
    local m
    local threshold = cfg.prediction.probability_threshold
    if #cfg.dataset.label_columns > 1 then
        m = metrics.multilabel(probs, targets:totable(), threshold, split.classes)
    else
        -- The threshold applies to two classes only; more take the argmax.
        m = metrics.classification(probs, true_index, split.classes, { threshold = threshold })
    end
    m.loss = bce_of_probs(probs, targets)
    m.probs, m.items, m.true_index, m.skipped = probs, kept, true_index, skipped
    return m
end

-- prediction.metric: the evaluation field it reads and whether higher is better.
local METRICS = { F1 = { "f1", true }, Accuracy = { "accuracy", true }, AUC = { "roc_auc", true },
                  LogLoss = { "loss", false } }

--- The value of prediction.metric in an evaluation, and whether it beats
--- `best` (a value or nil).
function M.metric(cfg, ev, best)
    local m = METRICS[cfg.prediction.metric]
    if not m then
        fail("prediction.metric must be one of F1, Accuracy, AUC, LogLoss; got '%s'", tostring(cfg.prediction.metric))
    end
    local v = ev and ev[m[1]]
    if v == nil then return nil, false end
    if best == nil then return v, v == v end
    return v, m[2] and v > best or (not m[2] and v < best)
end

-- ---- checkpoints -------------------------------------------------------------------

--- Saves model, optimizer and run state in one safetensors file, atomically
--- (temporary file + rename): a kill at any moment leaves the previous
--- checkpoint or the new one, never a torn file.
function M.save_checkpoint(dir, model, opt, state)
    local tensors = {}
    for k, v in pairs(model:state_dict()) do tensors[k] = v end
    local opt_tensors, opt_info = opt:state_dict()
    for k, v in pairs(opt_tensors) do tensors[k] = v end
    local meta = {}
    for k, v in pairs(opt_info) do meta[k] = v end
    meta["machrt.run"] = sys.json_encode(state)
    meta["machrt.rng"] = sys.json_encode(mt.rng_state())
    mt.save(dir .. "/" .. M.CHECKPOINT, tensors, meta)
end

--- best.safetensors: the model weights of the best evaluation so far
--- (save_best_checkpoint), written atomically.
function M.save_best(dir, model)
    mt.save(dir .. "/best.safetensors", model:state_dict())
end

--- Loads best.safetensors into the model (true), or returns false when the
--- run has none.
function M.load_best(dir, model)
    local path = dir .. "/best.safetensors"
    if not file_exists(path) then return false end
    model:load_state_dict(mt.load(path))
    return true
end

--- Loads a checkpoint into model and optimizer; returns the run state
--- ({epoch, step, history, ...}) saved with it.
function M.load_checkpoint(dir, model, opt)
    local path = dir .. "/" .. M.CHECKPOINT
    if not file_exists(path) then return nil end
    local ok, tensors, meta = pcall(mt.load, path)
    if not ok then fail("checkpoint %s cannot be read: %s", path, tostring(tensors)) end
    if not meta or not meta["machrt.run"] then
        fail("checkpoint %s has no run state (machrt.run metadata): not written by a machrt run", path)
    end
    local weights = {}
    for k, v in pairs(tensors) do
        if k:match("^state%.") then
            tensors[k] = v:to(model.device or "cpu") -- optimizer state on the parameters' device
        else
            weights[k] = v
        end
    end
    model:load_state_dict(weights)
    opt:load_state_dict(tensors, meta)
    mt.set_rng_state(sys.json_decode(meta["machrt.rng"], path .. " (rng)"))
    return sys.json_decode(meta["machrt.run"], path .. " (run state)")
end

-- ---- outputs ---------------------------------------------------------------------

local LOG_COLUMNS = { "epoch", "step", "lr", "train_loss", "val_loss", "val_f1", "val_accuracy",
                      "val_roc_auc", "seconds", "samples_per_second" }

local function csv_text(header, rows) return csv.table_text(header, rows, { digits = 6 }) end

--- log.csv: one row per epoch, from the run history.
function M.write_log(dir, history)
    sys.write_file(dir .. "/log.csv", csv_text(LOG_COLUMNS, history))
end

--- val_predictions.csv (file, true label, predicted label, one probability
--- column per class) and metrics.json.
function M.write_evaluation(dir, cfg, split, ev, epoch)
    local header = { "row", cfg.dataset.audio_column, "label", "predicted" }
    for _, c in ipairs(split.classes) do header[#header + 1] = "p_" .. c end
    local rows = {}
    for k, i in ipairs(ev.items) do
        local r = { split.val.rows[i], split.val.files[i], split.classes[ev.true_index[k]],
                    split.classes[ev.predicted[k]] }
        for c = 1, #split.classes do r[#r + 1] = ev.probs:get(k, c) end
        rows[k] = r
    end
    sys.write_file(dir .. "/val_predictions.csv", csv_text(header, rows))
    sys.write_file(dir .. "/metrics.json", sys.json_encode({
        epoch = epoch, metric = cfg.prediction.metric, f1 = ev.f1, accuracy = ev.accuracy,
        roc_auc = ev.roc_auc, loss = ev.loss, classes = split.classes, per_class = ev.per_class,
        confusion = ev.confusion, validation_clips = #ev.items, skipped = ev.skipped,
    }, { indent = true }) .. "\n")
end

--- The scorer folder (build_scoring_pipelines): weights, a manifest with
--- their SHA-256, the classes and the front-end settings, and score.lua, so
--- `machrt <dir>/scorer/score.lua file.wav ...` predicts with nothing else
--- from the run.
function M.build_scorer(dir, cfg, model, classes)
    local out = dir .. "/scorer"
    sys.mkdir(out)
    mt.save(out .. "/model.safetensors", model:state_dict())
    local keep = {}
    for _, section in ipairs{ "architecture", "audio", "prediction" } do keep[section] = cfg[section] end
    keep.experiment_name = cfg.experiment_name
    local manifest = {
        format = "machrt-scorer", version = 1, machrt = mt.version, classes = classes, config = keep,
        weights = { file = "model.safetensors", sha256 = sys.sha256_file(out .. "/model.safetensors") },
    }
    sys.write_file(out .. "/manifest.json", sys.json_encode(manifest, { indent = true }) .. "\n")
    sys.write_file(out .. "/score.lua", [=[
-- A packaged machrt model: predicts machine types of audio files.
--   machrt score.lua file.wav [file2.wav ...]      (prints a CSV)
-- Needs only this folder: manifest.json (classes, front end, checksum) and
-- model.safetensors, whose checksum is verified before use.
local infer = require "machrt.infer"
local here = (arg and arg[0] or "score.lua"):match("^(.*)/[^/]*$") or "."
local scorer = infer.load_scorer(here, { device = "auto" }) -- the GPU when one is usable
if #arg == 0 then
    io.stderr:write("usage: machrt " .. (arg[0] or "score.lua") .. " file.wav [...]\n")
    os.exit(2)
end
local files = {}
for i = 1, #arg do files[i] = arg[i] end
io.write(infer.csv_header(scorer), "\n")
infer.predict_files(scorer, files, { on_result = function(r) io.write(infer.csv_row(scorer, r), "\n") end })
]=])
    return out
end

--- The resolved config, as the run used it (resume reads it back).
function M.write_config(dir, cfg)
    sys.mkdir(dir)
    sys.write_file(dir .. "/" .. M.CONFIG, sys.json_encode(cfg, { indent = true }) .. "\n")
end

-- Published for the reference run (docs/REFERENCE.md, fold 4, real MIMII, V100).
M.REFERENCE_F1 = { 0.536, 0.849, 0.875, 0.964, 0.964 }
M.REFERENCE_LOSS = { 0.417, 0.180, 0.164, 0.063, 0.056 }

--- The end-of-fold table: each epoch's losses and F1 beside the reference.
function M.summary(fold, history)
    local rows = {}
    for _, h in ipairs(history) do
        rows[#rows + 1] = { h.epoch, h.train_loss, h.val_loss or "", h.val_f1 or "",
                            M.REFERENCE_LOSS[h.epoch] or "", M.REFERENCE_F1[h.epoch] or "",
                            string.format("%.1f", h.seconds), string.format("%.1f", h.samples_per_second) }
    end
    log.info("fold %d summary (reference: the published run on real MIMII)", fold)
    log.table({ "epoch", "train loss", "val loss", "val F1", "ref loss", "ref F1", "seconds", "samples/s" }, rows)
end

return M
