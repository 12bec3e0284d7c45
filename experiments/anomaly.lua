-- Anomaly detection (DCASE 2020 Task 2): train on normal clips only, give
-- every validation clip an anomaly score and a decision, and report ROC AUC
-- and pAUC per machine type and model id.
--
--   machrt experiments/anomaly.lua                          -- built-in synthetic corpus
--   machrt experiments/anomaly.lua --anomaly.method=autoencoder   -- the DCASE 2020 baseline
--   machrt experiments/anomaly.lua --anomaly.score=cosine --anomaly.head=adacos
--   machrt experiments/anomaly.lua --dataset.data_folder=DIR --dataset.train_dataframe=DIR/dataset.csv
--   machrt experiments/anomaly.lua --resume runs/<experiment_name>/fold4
--   machrt experiments/anomaly.lua --help                   -- every setting and its default
--
-- The CSV has audio, label (machine type), model_id and condition (normal /
-- abnormal). Two detectors (anomaly.method):
--   embedding    (default) a ResNet learns which machine it hears from normal
--                clips (angular-margin head: anomaly.head); a clip's score
--                (anomaly.score) averages, each standardised by the machine's
--                normal scores, the Mahalanobis distance of its embedding
--                (anomaly.features: each log-mel bin's mean, spread and
--                kurtosis over frames levelled to their own mean, the pooled
--                network output, ...) to its machine's normal embeddings, the
--                log-density of its levelled log-mel frames under a mixture
--                of the machine's normal ones and the mean distance of its
--                frame differences to the machine's normal ones; or any one
--                of them, or cosine, or nll
--   autoencoder  the DCASE 2020 baseline: one dense autoencoder per machine
--                type on 5-frame log-mel vectors; score = reconstruction error
-- A threshold per machine comes from its normal training clips at
-- anomaly.target_false_positive_rate.

local mt = require "machrt"
local train = require "machrt.train"
local pipeline = require "machrt.pipeline"
local plot = require "machrt.plot"
local log = require "machrt.log"
local anomaly = require "machrt.anomaly"

local defaults = {
    anomaly = {
        method = "embedding",                       -- embedding | autoencoder
        score = "mixture_ensemble",                 -- embedding: mixture_ensemble | ensemble | mahalanobis | frames
                                                    --   | deltas | mixture | cosine | nll
        features = "levelled",                      -- embedding: levelled | moments | spectrum | network | both (see README)
        head = "arcface",                           -- embedding: arcface | adacos | softmax
        margin = 0.5, scale = 30,                   -- arcface's angular margin and scale
        shrinkage = "ledoit-wolf",                  -- covariance shrinkage: ledoit-wolf or a number in [0, 1]
        target_false_positive_rate = 0.05,          -- thresholds: this fraction of normal clips flagged
        max_fpr = 0.1,                              -- pAUC over false-positive rates 0 .. max_fpr
    },
    autoencoder = {                                 -- the DCASE 2020 Task 2 baseline's settings
        frames = 5, hidden = 128, bottleneck = 8, epochs = 100, batch_size = 512,
        learning_rate = 0.001, validation_split = 0.1,
    },
    architecture = { backbone = "resnet34", dropout = 0, pool = "GeM", pretrained = false, width = 64 },
    audio = {                                       -- the DCASE baseline's log-mel (librosa's slaney mel)
        sample_rate = 16000, stft_window_size = 1024, hop_size = 512, mel_frequency_bins = 128,
        minimum_frequency = 0, maximum_frequency = 8000, spectrogram_normalization = "No",
        mel_scale = "slaney", mel_norm = "slaney",
        training_chunk_seconds = 4, channel = 1,
        resampler = "soxr",                         -- soxr | torchaudio (machrt.schema)
    },
    augmentation = { mix_audio = "Disabled", mix_concentration = 1.0, mix_iterations = 1,
                     mix_probability = 1.0, mix_target = "Ratio" },
    dataset = {
        audio_column = "audio", label_columns = { "label" },
        model_id_column = "model_id", condition_column = "condition",
        data_folder = "", train_dataframe = "", validation_dataframe = "",
        validation_strategy = "kfold", folds = { "4" },  -- folds stratified by machine and condition
        validation_size = 0.2, data_sample = 1,
        cache = "memory", cache_folder = "cache/waves", on_error = "fail",
    },
    environment = { mixed_precision_training = false, mixed_precision_inference = false,
                    number_of_workers = 4, seed = -1, threads = 0, device = "auto" },
    experiment_name = "anomaly_detection",
    logging = { number_of_audios = 5 },
    output_directory = "runs",
    prediction = { inference_chunk_method = "Fix", inference_chunk_seconds = 10,
                   max_inference_chunk_seconds = 600,
                   metric = "AUC" },                -- the only value: anomaly runs report AUC and pAUC
    training = {                                    -- the embedding network's training
        batch_size = 32, epochs = 10, drop_last_batch = true,
        learning_rate = 0.001, differential_learning_rate = 0.001,
        differential_learning_rate_layers = {}, optimizer = "AdamW", weight_decay = 0,
        schedule = "Cosine", warmup_epochs = 0, gradient_clip = 0.0, grad_accumulation = 1,
        build_scoring_pipelines = true, run_interpretations = true,
    },
}

local cfg, run = train.setup(defaults, arg, require("machrt.schema").with(anomaly.data.SCHEMA))
anomaly.data.validate(cfg)
local a, tr = cfg.anomaly, cfg.training
local device = pipeline.resolve_device(cfg.environment.device, "environment.device")

for _, fold in ipairs(run.folds) do
    local dir = run.dir_of(fold)
    local split = anomaly.data.prepare(cfg, fold)
    log.info("fold %d: %d normal training clips of %d machines (%s), %d validation clips -> %s", fold,
             #split.train.files, #split.machines, table.concat(split.machines, ", "), #split.val.files, dir)
    train.write_config(dir, cfg)
    local front = pipeline.front_end(cfg.audio, device)

    -- scores: the chosen score per validation clip; train_scores: the same
    -- for the normal training clips (thresholds); alternatives: every score
    -- the method gives, for the comparison in metrics.json; trained: what
    -- the detector keeps (networks, normal statistics).
    local scores, train_scores, alternatives, trained, thresholds_from
    if a.method == "autoencoder" then
        local models
        models, train_scores = anomaly.autoencoder.train_all(cfg, split, front, device, dir, run.resume)
        scores = anomaly.autoencoder.score(models, cfg, split.val, front, device)
        alternatives = { reconstruction = scores }
        a.score = "reconstruction"
        trained = { models = models }
        -- As the DCASE baselines do: the scores of the clips the model was
        -- fitted on (all but keras' last validation_split of the vectors).
        thresholds_from = "the training clips' own reconstruction errors (in-sample)"
    else
        local loaders <close> = train.loaders(cfg, split)
        local steps_per_epoch = loaders.train:num_batches()
        mt.manual_seed(cfg.environment.seed)
        local model, loss_fn = anomaly.embedding.build(cfg, split)
        if device ~= "cpu" then model:to(device) end
        local opt, set_lr = train.optimizer(cfg, model, steps_per_epoch)
        -- --resume: the verified checkpoint (train.setup has locked the folder).
        local state = run.resume and train.load_checkpoint(dir, model, opt,
                                                           { cfg = cfg, classes = split.machines, set_lr = set_lr })
            or { epoch = 0, step = 0, history = {}, seed = cfg.environment.seed, classes = split.machines }
        if state.epoch > 0 then log.info("resuming %s after epoch %d (step %d)", dir, state.epoch, state.step) end
        local stepper = train.Stepper{ model = model, loss = loss_fn, optimizer = opt, set_lr = set_lr,
                                       cfg = cfg, state = state, checkpoint_dir = dir }
        for epoch = state.epoch + 1, tr.epochs do
            local bar = log.progress{ title = string.format("fold %d epoch %d/%d", fold, epoch, tr.epochs),
                                      total = steps_per_epoch, fields = { "loss", "lr" } }
            stepper:start_epoch(epoch)
            for b, batch in train.prefetch(loaders.train:epoch(epoch), device) do
                for _, why in ipairs(batch.skipped) do log.info("skipped %s", why) end
                if batch.wave then
                    stepper:step(front(batch.wave), batch.target:to(device), b)
                    bar:update(b, { loss = stepper:mean_loss(), lr = stepper.lr }, batch.wave:size(1))
                end
            end
            local seconds = bar:finish()
            state.epoch = epoch
            state.history[#state.history + 1] = { epoch = epoch, step = state.step, lr = stepper.lr,
                train_loss = stepper:mean_loss(), seconds = seconds, samples_per_second = stepper.seen / seconds }
            log.info("fold %d epoch %d: train loss %.4f (%.1f s)", fold, epoch, stepper:mean_loss(), seconds)
            train.save_checkpoint(dir, model, opt, state)
            train.write_log(dir, state.history)
            plot.training_curves(dir .. "/curves.png", state.history)
        end
        -- Normal statistics from the training clips, whole (Fix chunks, in order).
        local normal_loaders <close> = anomaly.data.chunk_loader(cfg, split.train)
        local e_train = anomaly.embedding.embed(model, front, normal_loaders.val, #split.train.files, a.features)
        local e_val = anomaly.embedding.embed(model, front, loaders.val, #split.val.files, a.features)
        local stats = anomaly.embedding.fit(cfg, split, e_train)
        alternatives = anomaly.embedding.scores(stats, split, split.val, e_val)
        train_scores = anomaly.embedding.normal_scores(cfg, split, stats, e_train)
        scores = alternatives[a.score]
        trained = { model = model, stats = stats }
        thresholds_from = "the normal training clips, each scored by statistics without it"
    end

    local thresholds = anomaly.decide.thresholds(split, train_scores, a.target_false_positive_rate)
    local decisions = anomaly.decide.decide(split.val, scores, thresholds)
    anomaly.decide.write_scores(dir, split, scores, decisions)
    local evaluations, rates = {}, nil
    if split.can_evaluate then
        rates = anomaly.decide.decision_rates(split.val, decisions)
        rates.thresholds_from = thresholds_from
        for name, s in pairs(alternatives) do
            if anomaly.decide.complete(s, #split.val.files) then
                evaluations[name] = anomaly.decide.evaluate(split, s, a.max_fpr)
            end
        end
        anomaly.decide.log_evaluation(evaluations[a.score], string.format("fold %d, score %s", fold, a.score))
        anomaly.decide.log_comparison(evaluations, string.format("fold %d", fold))
        anomaly.decide.log_decisions(rates, a.target_false_positive_rate, string.format("fold %d", fold))
    end
    anomaly.decide.write_metrics(dir, cfg, evaluations, a.score, thresholds, split, rates)
    log.info("fold %d: val_scores.csv and metrics.json written to %s", fold, dir)
    if tr.run_interpretations then
        local page = anomaly.interpret.write(dir, {
            split = split, scores = scores, thresholds = thresholds, evaluation = evaluations[a.score],
            cfg = cfg, number_of_audios = cfg.logging.number_of_audios })
        log.info("interpretations: %s", page)
    end

    -- What inference needs (scripts/predict.lua --run, scripts/monitor.lua), and the scorer.
    local det = anomaly.detector.new(cfg, split, trained, thresholds, device)
    anomaly.detector.save_run(dir, det)
    if tr.build_scoring_pipelines then
        local scorer = anomaly.detector.write_scorer(dir, det)
        log.info("scorer written to %s (use it: machrt %s/score.lua --machine TYPE/id_NN file.wav ...)", scorer, scorer)
    end
end
