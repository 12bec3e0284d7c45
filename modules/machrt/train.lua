-- Helpers of experiment scripts: each does one step of the reference recipe
-- (docs/REFERENCE.md) so that experiments/resnet34.lua reads top to bottom.
--
--   local cfg, run = train.setup(defaults, arg[, keys])  -- CLI, checks, resume, seed, data, threads
--   local split = train.prepare_data(cfg, fold)          -- dataframe, labels, fold split
--   local loaders = train.loaders(cfg, split)            -- training and validation loaders
--   local opt, set_lr = train.optimizer(cfg, model, steps_per_epoch)
--   local stepper = train.Stepper{model =, loss =, optimizer = opt, set_lr =, cfg =, state =}
--   local ev = train.evaluate(cfg, model, front, loaders.val, split)
--   train.save_checkpoint(dir, model, opt, state)
--   train.load_checkpoint(dir, model, opt, {cfg =, classes =, set_lr =})   -- verified, or nil
--   train.write_log(dir, history) / train.write_evaluation(dir, cfg, split, ev, epoch)
--   local ranks = train.data_parallel(cfg)               -- under mpirun (machrt.dist.data_parallel)
--
-- Under mpirun the loaders shard, evaluate gathers, and only rank 0 writes
-- (the write functions below do nothing on the other ranks).
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
local run_folder = require "machrt.run_folder"
local dist = require "machrt.dist"
local trace = require "machrt.trace"

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

-- The resumed run's config: config.json over the defaults, then the command
-- line, which may change only environment.* and training.epochs (a value
-- equal to the stored one is no change). A setting the run predates gets
-- the value that reproduces what it did, said in a line (run_folder.fill_absent).
local function resumed_config(defaults, opts, keys)
    local dir = opts.resume
    local saved = run_folder.read_config(dir, defaults)
    local path = dir:gsub("/+$", "") .. "/" .. M.CONFIG
    for _, f in ipairs(run_folder.fill_absent(saved, defaults, keys, path)) do
        log.info("%s has no %s (the run predates the setting): resuming with %s = %s, what machrt "
                 .. "did before it existed", path, f.key, f.key, run_folder.show(f.value))
    end
    local resumed = config.copy(defaults)
    for section, v in pairs(saved) do
        if type(v) == "table" and type(resumed[section]) == "table" and v[1] == nil then
            for k, x in pairs(v) do resumed[section][k] = x end
        else
            resumed[section] = v
        end
    end
    local stored = config.copy(resumed)
    for _, o in ipairs(opts.overrides) do
        config.set(resumed, o.path, o.text)
        local changed = run_folder.differences(stored, resumed)
        if #changed > 0 then
            fail("--resume %s: --%s=%s changes %s (%s in %s/%s); a resumed run keeps its settings "
                 .. "except environment.* and training.epochs. Start it again with --overwrite, or "
                 .. "choose another experiment_name", dir, o.path, o.text, changed[1].key,
                 run_folder.show(changed[1].a), dir, M.CONFIG)
        end
    end
    return resumed
end

--- Parses the command line, checks every setting against `keys` (default
--- machrt.schema.reference; an experiment with keys of its own passes
--- schema.with{...}), resolves the seed and the data, sets threads, locks
--- the run folders and returns cfg and run = {dir_of(fold), folds = {...},
--- resume = dir|nil, folders = {[fold] = run_folder}}. A folder that holds
--- a run is refused unless --resume (continue it) or --overwrite (start
--- again) says what to do with it (machrt.run_folder).
function M.setup(defaults, args, keys)
    keys = keys or schema.reference
    local cfg, opts = config.from_args(defaults, args)
    -- Before any work, and before --help: a sweep checks its trials with it.
    -- A resumed run's settings are the stored config with the command line
    -- over it: they are checked once merged (below), since the defaults with
    -- the command line alone can break a rule across keys the run keeps.
    if not opts.resume or opts.help then config.validate(cfg, keys) end
    if opts.help then
        io.write("usage: machrt experiments/<name>.lua [--section.key=value ...] "
                 .. "[--resume <run folder> | --overwrite]\n",
                 "       [--traceback]  (a Lua traceback with every error; also MACHRT_TRACEBACK=1)\n\n",
                 "settings (defaults), each with its allowed values:\n  ",
                 table.concat(config.help(cfg, keys), "\n  "), "\n")
        os.exit(0)
    end
    if opts.resume and opts.overwrite then
        fail("--resume continues the run in %s and --overwrite starts it again: give one of them", opts.resume)
    end
    local run = { resume = opts.resume and (opts.resume:gsub("/+$", "")), folders = {} }
    if run.resume then
        -- Locked before its config is read; under mpirun by rank 0 alone, which writes.
        if dist.is_main() then run.folders.resumed = run_folder.open(run.resume, "resume") end
        cfg = config.validate(resumed_config(defaults, opts, keys), keys)
    end
    run_folder.check_name(cfg.experiment_name, "experiment_name")
    local env, ds = cfg.environment, cfg.dataset
    if env.seed == -1 then
        env.seed = dist.broadcast_value(random.draw_seed()) -- one seed for every rank
        log.info("environment.seed = -1: drew seed %d (recorded in the run's %s)", env.seed, M.CONFIG)
    end
    if (env.threads or 0) > 0 then mt.set_num_threads(env.threads) end
    if ds.data_folder == "" and ds.train_dataframe == "" then
        local synth = require "machrt.synth"
        local info = dist.main_first(function() return synth.ensure(M.DEFAULT_DATA) end)
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
        if run.resume then return run.resume end
        return string.format("%s/%s/fold%d", cfg.output_directory, cfg.experiment_name, fold)
    end
    -- Every fold's folder is locked and checked now, before any fold trains
    -- (under mpirun by rank 0: a refusal there ends every rank).
    for _, fold in ipairs(run.folds) do
        run.folders[fold] = run.folders.resumed or dist.is_main()
            and run_folder.open(run.dir_of(fold), opts.overwrite and "overwrite" or "fresh") or nil
    end
    run.folders.resumed = nil
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
-- indices, each clip's row number in its CSV (the __row column, for
-- messages) and its id in the CSV's own index (the __index column).
local function items_of(df, cfg, enc)
    local rows = {}
    for i, r in ipairs(df:column("__row")) do rows[i] = math.tointeger(tonumber(r)) end
    return { df = df, files = df:column(cfg.dataset.audio_column), targets = enc.targets:totable(),
             index = enc.index, rows = rows, ids = df:column("__index") }
end

-- Row numbers as the user sees them in the CSV (1 = first data row), and
-- each row's id in the CSV's own index: the values of its index column,
-- unchanged, or pandas' default index (0-based positions) when it has none,
-- so that prediction files join back onto the CSV on their first column.
local function with_row_ids(df)
    local rows = {}
    for i = 1, df:nrows() do rows[i] = tostring(i) end
    local ids = csv.index_ids(df)
    df:add_column("__row", rows)
    df:add_column("__index", ids)
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
        resampler = cfg.audio.resampler,
        chunk_seconds = chunk_seconds, max_seconds = cfg.prediction.max_inference_chunk_seconds,
        cache = ds.cache, cache_folder = ds.cache_folder, on_error = ds.on_error,
        seed = cfg.environment.seed, augment = augment,
    }
end

-- Under mpirun: each rank takes its block of every training batch, and a
-- contiguous block of the validation clips (gathered back in order).
local function shards(tr, n_train, n_val)
    local size = dist.size()
    if size == 1 then return nil, nil end
    local last = n_train % tr.batch_size
    if not tr.drop_last_batch and last > 0 and last < size then
        fail("training.drop_last_batch = false: the last training batch of %d clips cannot be split "
             .. "over %d ranks; set it to true, or use at most %d ranks", last, size, last)
    end
    if n_val < size then
        fail("validation: %d clips cannot be split over %d ranks", n_val, size)
    end
    local all = {}
    for i = 1, n_val do all[i] = i end
    return { rank = dist.rank(), size = size }, (dist.shard(all, { even = false }))
end

-- The disk wave cache, once per process and folder: made, and cleared of
-- the temporary files of writers that are gone (a killed run leaves its
-- half-written cache files behind, as in a run folder). Rank 0 sweeps.
local opened_caches = {}
local function open_disk_cache(folder)
    sys.mkdir(folder)
    if opened_caches[folder] or not dist.is_main() then return end
    opened_caches[folder] = true
    run_folder.remove_stale_temporaries(folder)
end

local function check_loading(cfg)
    local ds = cfg.dataset
    if ds.on_error ~= "fail" and ds.on_error ~= "skip" then
        fail("dataset.on_error must be 'fail' or 'skip', got '%s'", tostring(ds.on_error))
    end
    if cfg.prediction.inference_chunk_method ~= "Fix" then
        fail("prediction.inference_chunk_method: only 'Fix' is supported, got '%s'",
             tostring(cfg.prediction.inference_chunk_method))
    end
    if ds.cache == "disk" then open_disk_cache(ds.cache_folder) end
end

--- A loader of the whole clips of `items` (Fix chunks, in order), as the
--- validation loader; opts.name names it in errors, opts.items lists the
--- clips this rank loads (default all).
function M.chunk_loader(cfg, items, opts)
    opts = opts or {}
    check_loading(cfg)
    local env = cfg.environment
    return data.Loader{
        name = opts.name or "validation loader", module = "machrt.data.clips",
        config = clip_config(cfg, items, "chunks", cfg.prediction.inference_chunk_seconds),
        size = #items.files, batch_size = cfg.training.batch_size, shuffle = false, drop_last = false,
        seed = env.seed, workers = env.number_of_workers, items = opts.items,
    }
end

--- The training loader (random crops, shuffled, drop_last) and the
--- validation loader (Fix chunks, in order).
function M.loaders(cfg, split)
    local tr, env = cfg.training, cfg.environment
    check_loading(cfg)
    local train_shard, val_items = shards(tr, #split.train.files, #split.val.files)
    local train = data.Loader{
        name = "training loader", module = "machrt.data.clips",
        config = clip_config(cfg, split.train, "train", cfg.audio.training_chunk_seconds),
        size = #split.train.files, batch_size = tr.batch_size, shuffle = true,
        drop_last = tr.drop_last_batch, seed = env.seed, workers = env.number_of_workers,
        shard = train_shard,
    }
    local val = M.chunk_loader(cfg, split.val, { items = val_items })
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

--- Mixed precision (environment.mixed_precision_training). On a CUDA
--- device the convolution / linear GEMMs take fp16 operands (fp32
--- accumulation, fp32 master weights and gradients) and the loss is scaled
--- dynamically (machrt.amp). On the CPU they take bf16 operands where the
--- CPU has AMX tiles, or avx512_bf16 whose dot products time at least
--- BF16_DOT_SPEEDUP x its fp32 FMAs (mt.cpu_peaks: about 2x on a Zen 5
--- EPYC, where bf16 trained faster than fp32; an Intel Xeon without AMX
--- trained slower in bf16, README "Matrix products on the CPU"); bf16 has
--- fp32's exponent range, so no loss scaling. Elsewhere it says so and
--- trains in fp32. Returns the loss scaler, or nil. Which of these it is is
--- said once per run (log.once), not per fold; the timing is once per
--- process, so every fold decides alike.
local BF16_DOT_SPEEDUP = 1.5

function M.mixed_precision(cfg, device)
    if not cfg.environment.mixed_precision_training then return nil end
    if device == "cpu" then
        local speedup -- of the bf16 dot products over the fp32 FMAs, where there is no AMX
        if mt.cpu_bf16() == "avx512_bf16" then
            local peaks = mt.cpu_peaks()
            speedup = (peaks.bf16 or 0) / (peaks.fp32 or math.huge)
            if speedup < BF16_DOT_SPEEDUP then
                mt.set_gemm_precision("fp32")
                log.once("mixed precision", "environment.mixed_precision_training: this CPU's bf16 dot "
                         .. "products time at %.2fx its fp32 FMAs (below %.1fx; no AMX), too little for bf16 "
                         .. "to pay for its conversions; training in float32", speedup, BF16_DOT_SPEEDUP)
                return nil
            end
        end
        mt.set_gemm_precision("bf16")
        if mt.gemm_precision() == "bf16" then
            local units = speedup and ("avx512_bf16, dot products timed at %.2fx the fp32 FMAs"):format(speedup)
                          or "AMX"
            log.once("mixed precision", "mixed precision: bf16 GEMM operands on the CPU (%s), fp32 "
                     .. "accumulation and master weights, no loss scaling", units)
        else
            log.once("mixed precision", "environment.mixed_precision_training: this CPU has no bf16 "
                     .. "(avx512_bf16 or AMX); training in float32")
        end
        return nil
    end
    mt.set_gemm_precision("fp16")
    local scaler = require("machrt.amp").GradScaler()
    log.once("mixed precision", "mixed precision: fp16 GEMM operands, fp32 master weights, dynamic loss "
             .. "scale from %g", scaler:get_scale())
    return scaler
end

--- The training step (forward, loss, accumulation, loss scaling, clipping,
--- learning rate, optimizer step): see machrt.stepper.
M.Stepper = require("machrt.stepper").new

--- Data-parallel training under mpirun (environment.distributed,
--- environment.sync_batchnorm): see machrt.dist.data_parallel.
M.data_parallel = require("machrt.dist.data_parallel").setup

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

-- Every rank's validation results, concatenated in rank order (the ranks'
-- blocks are contiguous, so this is the clips' order), on every rank: the
-- metrics are then computed alike everywhere.
local function gather_validation(probs, targets, kept, skipped)
    local parts = dist.all_gather({ probs = probs:totable(), targets = targets:totable(), kept = kept,
                                    skipped = skipped })
    local p, t, k, s = {}, {}, {}, {}
    for _, part in ipairs(parts) do
        for _, pair in ipairs{ { part.probs, p }, { part.targets, t }, { part.kept, k }, { part.skipped, s } } do
            table.move(pair[1], 1, #pair[1], #pair[2] + 1, pair[2])
        end
    end
    return mt.tensor(p), mt.tensor(t), k, s
end

--- Predicts every validation clip (Fix chunks, mean of the chunks' sigmoid
--- outputs) and scores it. Returns {probs = {n, C}, loss, f1, accuracy,
--- roc_auc, per_class, confusion, predicted, rows, skipped}.
function M.evaluate(cfg, model, front, loader, split)
    -- Evaluation shapes differ from training's: hand training's activations
    -- back first, and evaluation's afterwards, so the two never add up.
    model:clear_state()
    mt.empty_cache()
    dist.broadcast_buffers(model) -- every rank validates the model rank 0 saves
    model:evaluate()
    -- Inference GEMMs follow environment.mixed_precision_inference: fp16 on a
    -- device, bf16 on a CPU that has it; fp32 otherwise, whatever training used.
    local reduced = model.device == "cuda" and "fp16" or "bf16"
    local precision = mt.set_gemm_precision(cfg.environment.mixed_precision_inference and reduced or "fp32")
    -- On the CPU the fused inference plan, with this epoch's weights.
    local net = infer.inference_net(model, model.device)
    local n, C = #split.val.files, #split.classes
    local probs, targets = mt.zeros{ n, C }, mt.zeros{ n, C }
    local kept, skipped = {}, {}
    local filled = 0
    local bar = log.progress{ title = "validation", total = loader:num_batches(), fields = {}, unit = "clips" }
    for b, batch in loader:epoch(0) do
        for _, why in ipairs(batch.skipped) do
            skipped[#skipped + 1] = why
            -- Said now, as training does: scores over fewer clips must not pass unnoticed.
            log.info("validation: skipped %s", why)
        end
        if batch.chunks then
            if trace.active then trace.active:validation_batch(front, batch.chunks, batch.counts, batch.target) end
            local p = infer.clip_probabilities(net, front, batch.chunks, batch.counts)
            for k, i in ipairs(batch.indices) do
                filled = filled + 1
                kept[filled] = i
                probs:select(1, filled):copy(p:select(1, k))
                targets:select(1, filled):copy(batch.target:select(1, k))
            end
        end
        bar:update(b, {}, batch.indices and #batch.indices or 0)
    end
    bar:finish()
    -- Its weights and buffers are not training's to carry; built anew (a
    -- fraction of a second) at the next validation.
    if net ~= model then infer.release_plans(model) end
    model:clear_state()
    mt.empty_cache()
    model:training()
    if precision then mt.set_gemm_precision(precision) end
    if filled == 0 then fail("validation: no clip could be read (%d skipped)", #skipped) end
    probs, targets = probs:narrow(1, 1, filled):contiguous(), targets:narrow(1, 1, filled):contiguous()
    if dist.size() > 1 then probs, targets, kept, skipped = gather_validation(probs, targets, kept, skipped) end
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
    if trace.active then trace.active:evaluation(m) end
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
--- checkpoint or the new one, never a torn file. The metadata holds the run
--- state, the RNG, the config.json the run trains under and a checksum of
--- it all (machrt.run_folder), so a damaged or edited file is refused.
function M.save_checkpoint(dir, model, opt, state)
    if not dist.is_main() then return end
    run_folder.before_write(dir)
    sys.mkdir(dir) -- a model's folder inside the run folder (--overwrite has just emptied it)
    local tensors = {}
    for k, v in pairs(model:state_dict()) do tensors[k] = v end
    local opt_tensors, opt_info = opt:state_dict()
    for k, v in pairs(opt_tensors) do tensors[k] = v end
    local meta = {}
    for k, v in pairs(opt_info) do meta[k] = tostring(v) end
    meta["machrt.run"] = sys.json_encode(state)
    meta["machrt.rng"] = sys.json_encode(mt.rng_state())
    meta["machrt.config"] = run_folder.config_text(dir)
    mt.save(dir .. "/" .. M.CHECKPOINT, tensors, run_folder.seal(tensors, meta))
end

--- best.safetensors: the model weights of the best evaluation so far
--- (save_best_checkpoint) and the epoch they come from, written atomically.
function M.save_best(dir, model, epoch)
    if not dist.is_main() then return end
    run_folder.before_write(dir)
    local weights = model:state_dict()
    mt.save(dir .. "/best.safetensors", weights,
            run_folder.seal(weights, { ["machrt.best_epoch"] = tostring(epoch) }))
end

-- Reads a sealed file: tensors and metadata, checksum verified.
local function load_verified(path)
    local ok, tensors, meta = pcall(mt.load, path)
    if not ok then fail("%s cannot be read: %s", path, tostring(tensors)) end
    run_folder.verify(path, tensors, meta)
    return tensors, meta
end

--- Loads best.safetensors (the weights of state.best.epoch) into the model
--- (true), or returns false when the run has no best epoch.
function M.load_best(dir, model, state)
    dist.barrier() -- rank 0 has written it
    local path = dir .. "/best.safetensors"
    local best = state and state.best
    if not file_exists(path) then
        if best then fail("%s is missing: the checkpoint's run state names epoch %d as the best", path, best.epoch) end
        return false
    end
    local weights, meta = load_verified(path)
    local epoch = math.tointeger(tonumber(meta["machrt.best_epoch"]))
    if not best or epoch ~= best.epoch then
        fail("%s holds the weights of epoch %s, but the checkpoint's run state names %s as the "
             .. "best: the two files are from different runs", path, tostring(meta["machrt.best_epoch"]),
             best and "epoch " .. best.epoch or "no epoch")
    end
    model:load_state_dict(weights)
    return true
end

-- The run-state fields a checkpoint must hold, checked before any is used.
local function check_run_state(path, s, cfg, classes, epochs, epochs_key)
    local function bad(field, fmt, ...)
        fail("checkpoint %s: run state (machrt.run) field '%s' " .. fmt, path, field, ...)
    end
    if type(s) ~= "table" then fail("checkpoint %s: run state (machrt.run) is not a JSON object", path) end
    if math.type(s.epoch) ~= "integer" or s.epoch < 0 then bad("epoch", "must be a non-negative integer, got %s", tostring(s.epoch)) end
    if math.type(s.step) ~= "integer" or s.step < 0 then bad("step", "must be a non-negative integer, got %s", tostring(s.step)) end
    if type(s.history) ~= "table" then bad("history", "must be a list of epochs, got %s", tostring(s.history)) end
    if #s.history ~= s.epoch then
        bad("epoch", "is %d, but its history holds %d epochs", s.epoch, #s.history)
    end
    for i, h in ipairs(s.history) do
        if type(h) ~= "table" or h.epoch ~= i or math.type(h.step) ~= "integer" then
            bad("history", "entry %d is not epoch %d's record", i, i)
        end
    end
    if s.epoch > 0 and s.history[s.epoch].step ~= s.step then
        bad("step", "is %d, but epoch %d ended at step %d", s.step, s.epoch, s.history[s.epoch].step)
    end
    if s.epoch > epochs then
        fail("checkpoint %s is after epoch %d, past %s = %d: resume with "
             .. "--%s=%d or more", path, s.epoch, epochs_key, epochs, epochs_key, s.epoch)
    end
    if type(s.classes) ~= "table" or table.concat(s.classes, ",") ~= table.concat(classes, ",") then
        bad("classes", "is [%s], but the data gives the classes [%s]",
            type(s.classes) == "table" and table.concat(s.classes, ", ") or tostring(s.classes),
            table.concat(classes, ", "))
    end
    if s.best ~= nil then
        local b = s.best
        if type(b) ~= "table" or math.type(b.epoch) ~= "integer" or b.epoch < 1 or b.epoch > s.epoch
                or type(b.value) ~= "number" or b.metric ~= cfg.prediction.metric then
            bad("best", "must name an epoch 1..%d, its value and prediction.metric '%s'", s.epoch,
                cfg.prediction.metric)
        end
    end
    if s.amp ~= nil and (type(s.amp) ~= "table" or type(s.amp.scale) ~= "number" or s.amp.scale <= 0) then
        bad("amp", "must hold a positive loss scale")
    end
end

-- Says how a resumed run with another training.epochs goes on. The cosine
-- schedule is recomputed over the new length: the rate at the next step is
-- the one a run planned with that many epochs would have there (so after a
-- finished run it rises from 0 again), and it still reaches 0 at the end.
-- Continuing at the old final rate would train the extension at a rate of
-- 0, learning nothing.
local function log_new_length(path, state, before, cfg, set_lr)
    local t = cfg.training
    local last = state.history[#state.history]
    local next_lr = set_lr and set_lr(state.step + 1)
    if t.schedule == "Cosine" then
        log.info("training.epochs %d -> %d (checkpoint %s after epoch %d): the cosine schedule is "
                 .. "recomputed over %d epochs, so the learning rate goes from %.3g (epoch %d) to "
                 .. "%s at step %d and decays to 0 at epoch %d", before, t.epochs, path, state.epoch,
                 t.epochs, last and last.lr or t.learning_rate, state.epoch,
                 next_lr and string.format("%.3g", next_lr) or "its recomputed value", state.step + 1, t.epochs)
    else
        log.info("training.epochs %d -> %d (checkpoint %s after epoch %d): training.schedule = %s, "
                 .. "the learning rate goes on unchanged", before, t.epochs, path, state.epoch, t.schedule)
    end
end

--- Loads a checkpoint into model and optimizer after checking it: the
--- checksum, the run state (types, ranges, consistency), the classes and the
--- settings it was trained with against cfg (all but environment.* and
--- training.epochs must agree). Returns the run state ({epoch, step,
--- history, ...}), or nil when the folder has no checkpoint.
--- expect = {cfg =, classes =, set_lr =, epochs =, epochs_key =}: set_lr
--- (train.optimizer's) lets a run extended by more epochs say where its
--- learning rate goes; epochs and epochs_key (default: training.epochs) give
--- the length the state may not pass, for a model trained by another key
--- (an anomaly run's autoencoders: autoencoder.epochs).
function M.load_checkpoint(dir, model, opt, expect)
    if type(expect) ~= "table" or not expect.cfg or not expect.classes then
        fail("train.load_checkpoint(dir, model, opt, {cfg =, classes =}): the run's config and "
             .. "classes are needed to check the checkpoint")
    end
    local path = dir .. "/" .. M.CHECKPOINT
    if not file_exists(path) then return nil end
    local tensors, meta = load_verified(path)
    if not meta["machrt.run"] then
        fail("checkpoint %s has no run state (machrt.run metadata): not written by a machrt run", path)
    end
    local cfg = expect.cfg
    local state = sys.json_decode(meta["machrt.run"], path .. " (run state)")
    check_run_state(path, state, cfg, expect.classes, expect.epochs or cfg.training.epochs,
                    expect.epochs_key or "training.epochs")
    local trained = run_folder.check_trained_config(run_folder.config_path(dir), path, meta, cfg)
    local rng = sys.json_decode(meta["machrt.rng"] or "null", path .. " (rng)")
    if type(rng) ~= "table" or math.type(rng.seed) ~= "integer" or math.type(rng.offset) ~= "integer" then
        fail("checkpoint %s: machrt.rng must hold integer seed and offset", path)
    end
    local weights = {}
    for k, v in pairs(tensors) do
        if k:match("^state%.") then
            tensors[k] = v:to(model.device or "cpu") -- optimizer state on the parameters' device
        else
            weights[k] = v
        end
    end
    local ok, err = pcall(model.load_state_dict, model, weights)
    if not ok then fail("checkpoint %s does not fit the model: %s", path, tostring(err)) end
    ok, err = pcall(opt.load_state_dict, opt, tensors, meta)
    if not ok then fail("checkpoint %s does not fit the optimizer: %s", path, tostring(err)) end
    mt.set_rng_state(rng)
    -- best.safetensors is written after the checkpoint: a kill between the
    -- two leaves an earlier epoch's best, where the checkpoint's own weights
    -- are the best ones.
    local best_path = dir .. "/best.safetensors"
    if state.best and state.best.epoch == state.epoch then
        local best_epoch
        if file_exists(best_path) then
            local readable, _, best_meta = pcall(mt.load, best_path)
            best_epoch = readable and math.tointeger(tonumber(best_meta["machrt.best_epoch"]))
        end
        if best_epoch ~= state.epoch then
            M.save_best(dir, model, state.epoch)
            log.info("%s rewritten from the checkpoint (epoch %d, the best one)", best_path, state.epoch)
        end
    end
    local before = trained and trained.training and trained.training.epochs
    if math.type(before) == "integer" and before ~= cfg.training.epochs then
        log_new_length(path, state, before, cfg, expect.set_lr)
    end
    return state
end

-- ---- outputs ---------------------------------------------------------------------

local function csv_text(header, rows) return csv.table_text(header, rows, { digits = 6 }) end

--- log.csv: one row per epoch, from the run history.
function M.write_log(dir, history)
    if not dist.is_main() then return end
    sys.write_file(dir .. "/" .. run_folder.LOG, csv_text(run_folder.LOG_COLUMNS, history))
end

--- val_predictions.csv (the CSV's own index as an unnamed first column, as
--- pandas writes it; the audio column, true label, predicted label, one
--- probability column per class) and metrics.json.
function M.write_evaluation(dir, cfg, split, ev, epoch)
    if not dist.is_main() then return end
    local header = { "", cfg.dataset.audio_column, "label", "predicted" }
    for _, c in ipairs(split.classes) do header[#header + 1] = "p_" .. c end
    local rows = {}
    for k, i in ipairs(ev.items) do
        local r = { split.val.ids[i], split.val.files[i], split.classes[ev.true_index[k]],
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
    if not dist.is_main() then return out end
    run_folder.before_write(dir)
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
-- model.safetensors, whose checksum is verified before use. Exit status 1
-- when a file could not be read (its row says why), 2 for a usage error.
local infer = require "machrt.infer"
local cli = require "machrt.cli"
local CLI = { name = "score", positional = true, options = {},
              usage = "usage: machrt " .. (arg[0] or "score.lua") .. " file.wav [file2.wav ...]\n"
                  .. "  prints a CSV: file, label, one probability per class, chunks, error\n" }
local files = cli.parse(arg, CLI).positional
if #files == 0 then cli.fail(CLI, "give at least one audio file") end
local here = (arg and arg[0] or "score.lua"):match("^(.*)/[^/]*$") or "."
local scorer = infer.load_scorer(here, { device = "auto" }) -- the GPU when one is usable
local errors = 0
io.write(infer.csv_header(scorer), "\n")
infer.predict_files(scorer, files, { on_result = function(r)
    if r.error then errors = errors + 1 end
    io.write(infer.csv_row(scorer, r), "\n")
end })
if errors > 0 then
    io.stderr:write(infer.unreadable_line("score", errors, #files))
    os.exit(1)
end
]=])
    return out
end

--- The resolved config, as the run used it (resume reads it back). After
--- --overwrite it is written with the first checkpoint (machrt.run_folder).
function M.write_config(dir, cfg)
    if not dist.is_main() then return end
    run_folder.write_config(dir, sys.json_encode(cfg, { indent = true }) .. "\n")
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
