-- The reference experiment (docs/REFERENCE.md): ResNet34 + GeM on 128-bin log-mel
-- spectrograms, BCE, AdamW, cosine schedule, fold 4 of 5.
--
--   machrt experiments/resnet34.lua                        -- built-in synthetic corpus
--   machrt experiments/resnet34.lua --training.epochs=2 --dataset.folds=0,1
--   machrt experiments/resnet34.lua --dataset.data_folder=../shared/data/mimii-sample \
--       --dataset.train_dataframe=../shared/data/mimii-sample/sample.csv
--   machrt experiments/resnet34.lua --resume runs/<experiment_name>/fold4
--   machrt experiments/resnet34.lua --resume runs/<experiment_name>/fold4 --training.epochs=7
--   machrt experiments/resnet34.lua --overwrite            -- start the run in its folder again
--   machrt experiments/resnet34.lua --help                 -- every setting and its default
--   mpirun -np 2 machrt experiments/resnet34.lua           -- data-parallel on 2 ranks
--
-- The config mirrors the reference yaml: same sections, same keys, same
-- values. Keys marked "machrt:" are additions; an empty data_folder and
-- train_dataframe mean the built-in synthetic corpus (generated on first use).

local mt = require "machrt"
local train = require "machrt.train"
local pipeline = require "machrt.pipeline"
local plot = require "machrt.plot"
local log = require "machrt.log"
local cross_fold = require "machrt.cross_fold"
local profile = require "machrt.profile"

local defaults = {
    architecture = { backbone = "resnet34", dropout = 0, pool = "GeM", pretrained = false,
                     width = 64 },                  -- machrt: first-stage channels
    audio = {
        sample_rate = 22050, stft_window_size = 2048, hop_size = 512, mel_frequency_bins = 128,
        minimum_frequency = 50, maximum_frequency = 16000, spectrogram_normalization = "No",
        training_chunk_seconds = 10,
        channel = 1,                                -- machrt: channel of multi-channel files
        resampler = "soxr",                         -- machrt: soxr | torchaudio (the reference's resampler)
    },
    augmentation = { mix_audio = "Disabled", mix_concentration = 1.0, mix_iterations = 1,
                     mix_probability = 1.0, mix_target = "Ratio" },
    dataset = {
        audio_column = "audio", label_columns = { "label" },
        data_folder = "", train_dataframe = "", validation_dataframe = "",
        validation_strategy = "kfold", folds = { "4" }, group_fold_column = "Unnamed: 0",
        validation_size = 0.2, data_sample = 1,
        cache = "memory",                           -- machrt: memory | disk | none (decoded waves)
        cache_folder = "cache/waves",               -- machrt: for cache = disk
        on_error = "fail",                          -- machrt: fail | skip unreadable files
    },
    environment = { mixed_precision_training = true, mixed_precision_inference = false,
                    number_of_workers = 4, seed = -1,
                    threads = 0,                    -- machrt: compute threads (0 = all cores)
                    device = "auto",                -- machrt: auto | cpu | cuda (auto = cuda when a GPU is usable)
                    distributed = "auto",           -- machrt: auto | none | mpi (auto = data-parallel under mpirun/srun)
                    sync_batchnorm = false },       -- machrt: batch statistics over all ranks (else each rank's own)
    experiment_name = "final_machinetype_audio_classification",
    logging = { number_of_audios = 5 },             -- worst validation clips pictured by run_interpretations
    output_directory = "runs",                      -- machrt: runs/<experiment_name>/fold<k>
    prediction = { inference_chunk_method = "Fix", inference_chunk_seconds = 5,
                   max_inference_chunk_seconds = 600, metric = "F1", probability_threshold = 0.5 },
    training = {
        batch_size = 32, epochs = 5, drop_last_batch = true, evaluation_epochs = 1,
        learning_rate = 0.001, differential_learning_rate = 0.001,
        differential_learning_rate_layers = {}, optimizer = "AdamW", weight_decay = 0,
        schedule = "Cosine", warmup_epochs = 0, gradient_clip = 0.0, grad_accumulation = 1,
        loss_function = "BCE", save_best_checkpoint = false, build_scoring_pipelines = true,
        run_interpretations = true,
    },
}

local cfg, run = train.setup(defaults, arg)
local tr = cfg.training
-- Under mpirun: one model on every rank, each training on its block of
-- every batch; in a plain run this does nothing.
local ranks = train.data_parallel(cfg)
-- Model, batches and front end live on this device.
local device = pipeline.resolve_device(cfg.environment.device, "environment.device")

for _, fold in ipairs(run.folds) do
    local dir = run.dir_of(fold)
    -- Where the fold's wall time goes: logged and written to profile.json at its end.
    local prof = profile.new()
    local split = train.prepare_data(cfg, fold)
    log.info("fold %d: %d training and %d validation clips, classes: %s -> %s", fold,
             #split.train.files, #split.val.files, table.concat(split.classes, ", "), dir)

    local front = pipeline.front_end(cfg.audio, device)
    local loaders <close> = train.loaders(cfg, split)
    local steps_per_epoch = loaders.train:num_batches()

    mt.manual_seed(cfg.environment.seed)             -- weight init and dropout draw from here
    local model = ranks:wrap(pipeline.build_model(cfg.architecture, #split.classes, { device = device }))
    local loss_fn = train.loss(cfg)
    local opt, set_lr, total_steps = train.optimizer(cfg, model, steps_per_epoch)

    -- --resume: the checkpoint, once verified, restores weights, optimizer,
    -- RNG and history. (train.setup has locked the folder, and refused one
    -- holding a run unless --resume or --overwrite said what to do with it.)
    local state = run.resume and train.load_checkpoint(dir, model, opt,
                                                       { cfg = cfg, classes = split.classes, set_lr = set_lr })
        or { epoch = 0, step = 0, history = {}, seed = cfg.environment.seed, classes = split.classes }
    if state.epoch > 0 then
        log.info("resuming %s after epoch %d of %d (step %d)", dir, state.epoch, tr.epochs, state.step)
    end
    train.write_config(dir, cfg) -- after --overwrite: with the first checkpoint
    local _ <close> = train.on_interrupt(run, dir, state) -- Ctrl-C: says how to resume
    local scaler = train.mixed_precision(cfg, device)  -- nil: fp32 training (always on the CPU)
    if scaler and state.amp then
        scaler:load_state_dict(state.amp)
        log.info("mixed precision: loss scale %g from the checkpoint", scaler:get_scale())
    end

    -- One call per batch: forward, loss, backward; every grad_accumulation
    -- batches an optimizer step (machrt.stepper says in which order).
    local stepper = train.Stepper{ model = model, loss = loss_fn, optimizer = opt, set_lr = set_lr,
                                   scaler = scaler, cfg = cfg, state = state, checkpoint_dir = dir,
                                   reduce_gradients = ranks.reduce_gradients, profile = prof }

    prof:add("setup", mt.clock() - prof.start) -- data, loaders, model, optimizer, checkpoint
    local last_evaluation
    for epoch = state.epoch + 1, tr.epochs do
        local evaluation
        local bar = log.progress{ title = string.format("fold %d epoch %d/%d", fold, epoch, tr.epochs),
                                  total = steps_per_epoch, fields = { "loss", "lr" } }
        stepper:start_epoch(epoch) -- training mode; a partial accumulation never carries over
        -- On a device the next batch is copied while this one computes.
        for b, batch in prof:wait("data loading", train.prefetch(loaders.train:epoch(epoch), device)) do
            for _, why in ipairs(batch.skipped) do log.info("skipped %s", why) end
            if batch.wave then
                -- On the CPU, batch.target:to(device) is the same tensor.
                stepper:step(prof:time("front end", front, batch.wave), batch.target:to(device), b, batch.weight)
                bar:update(b, { loss = stepper:mean_loss(), lr = stepper.lr }, batch.wave:size(1))
            end
        end
        local seconds = bar:finish()
        ranks:epoch_totals(stepper)
        local row = { epoch = epoch, step = state.step, lr = stepper.lr, train_loss = stepper:mean_loss(),
                      seconds = seconds, samples_per_second = stepper.seen / seconds }

        if epoch % tr.evaluation_epochs == 0 or epoch == tr.epochs then
            evaluation = prof:time("evaluation", train.evaluate, cfg, model, front, loaders.val, split)
            row.val_loss, row.val_f1 = evaluation.loss, evaluation.f1
            row.val_accuracy, row.val_roc_auc = evaluation.accuracy, evaluation.roc_auc
            log.info("fold %d epoch %d: train loss %.4f  val loss %.4f  val F1 %.4f  accuracy %.4f  (%.1f s, %.1f samples/s)",
                     fold, epoch, row.train_loss, row.val_loss, row.val_f1, row.val_accuracy,
                     seconds, row.samples_per_second)
        end
        -- save_best_checkpoint: best.safetensors keeps the weights of the
        -- best prediction.metric so far (checkpoint.safetensors stays the last).
        local value, better = train.metric(cfg, evaluation, state.best and state.best.value)
        local new_best = tr.save_best_checkpoint and better
        if new_best then state.best = { epoch = epoch, value = value, metric = cfg.prediction.metric } end
        state.epoch = epoch
        state.history[#state.history + 1] = row
        local t_write = mt.clock()
        train.save_checkpoint(dir, model, opt, state)  -- first, so the files below can be rebuilt
        if new_best then train.save_best(dir, model, epoch) end
        train.write_log(dir, state.history)
        if ranks.main then plot.training_curves(dir .. "/curves.png", state.history) end
        if evaluation then train.write_evaluation(dir, cfg, split, evaluation, epoch) end
        prof:add("checkpoint and writes", mt.clock() - t_write)
        last_evaluation = evaluation or last_evaluation
    end

    ranks:finish(model)
    train.summary(fold, state.history)
    if device ~= "cpu" then log.info("%s", train.device_memory_line(device)) end
    if tr.save_best_checkpoint and train.load_best(dir, model, state) then
        -- The scorer and the interpretations describe the best model.
        log.info("best %s %.4f at epoch %d: best.safetensors is used from here on",
                 state.best.metric, state.best.value, state.best.epoch)
        if state.best.epoch ~= state.epoch then last_evaluation = nil end -- evaluate the best again
    end
    if tr.run_interpretations then
        local ev = last_evaluation or prof:time("evaluation", train.evaluate, cfg, model, front, loaders.val, split)
        local t_report = mt.clock()
        if ranks.main then require("machrt.interpret").write(dir, {
            classes = split.classes, evaluation = ev, val = split.val, data_folder = cfg.dataset.data_folder,
            history = state.history, cfg = cfg, number_of_audios = cfg.logging.number_of_audios }) end
        prof:add("interpretations", mt.clock() - t_report)
        log.info("interpretations: %s/index.html", dir)
    end
    if tr.build_scoring_pipelines then
        local scorer = prof:time("scorer", train.build_scorer, dir, cfg, model, split.classes)
        log.info("scorer written to %s (use it: machrt %s/score.lua file.wav ...)", scorer, scorer)
    end
    local summary = prof:log(string.format("fold %d profile", fold))
    if ranks.main then prof:write(dir .. "/" .. profile.FILE, summary) end
end
-- Several folds: their metrics' mean and spread, and the out-of-fold predictions.
cross_fold.write(cfg, run)
