-- The settings of the reference recipe (docs/REFERENCE.md) and machrt's
-- additions to it: for each key its type, allowed values or range, and
-- meaning, in the form machrt.config reads. Every experiment built on
-- machrt.train shares these; one with keys of its own adds them:
--
--   local schema = require "machrt.schema"
--   local keys = schema.with{ ["anomaly.threshold"] = { "number", min = 0, about = "..." } }
--   train.setup(defaults, arg, keys)  -- checks every value before any work
--
-- Checks across keys (a file that must exist, a bound set by another key)
-- live here too, so that a run, its --help and every trial of a sweep are
-- refused for the same reasons, before anything starts.

local sys = require "machrt.sys"

local M = {}

local function exists(path, want_dir)
    local st = sys.stat(path)
    return st ~= nil and (st.is_dir and true or false) == want_dir
end

-- A path check: "" passes (the key is unset); else it must name a file (or
-- a folder).
local function existing(want_dir)
    return function(v)
        if v ~= "" and not exists(v, want_dir) then
            return want_dir and "no such folder" or "no such file"
        end
    end
end

-- The parameter names of a backbone (the same for every width), built once
-- per name without initialisation, for differential_learning_rate_layers.
local layer_names = {}
local function parameter_names(backbone)
    if not layer_names[backbone] then
        local model = require("machrt.nn")[backbone]{ in_channels = 1, num_classes = 2, width = 1,
                                                       pool = "gem", init = false }
        local names = {}
        for _, p in ipairs(model:parameters()) do names[#names + 1] = p.name end
        layer_names[backbone] = names
    end
    return layer_names[backbone]
end

-- The top-level layers of a parameter list, in order ("conv1", "layer1", ...).
local function top_layers(names)
    local out, seen = {}, {}
    for _, n in ipairs(names) do
        local top = n:match("^[^.]+")
        if not seen[top] then seen[top], out[#out + 1] = true, top end
    end
    return out
end

local function unmatched_layers(layers, cfg)
    if #layers == 0 then return nil end -- the default: no network is built to check nothing
    local names = parameter_names(cfg.architecture.backbone)
    local missing = {}
    for _, layer in ipairs(layers) do
        local hit = false
        for _, n in ipairs(names) do
            -- The rule of optim.param_groups: a layer names whole dotted components.
            if ("." .. n .. "."):find("." .. layer .. ".", 1, true) then hit = true; break end
        end
        if not hit then missing[#missing + 1] = layer end
    end
    if #missing > 0 then
        return string.format("%s matches no layer of %s (layers: %s; a dotted name such as "
                             .. "layer4.2 names a block)", table.concat(missing, ", "),
                             cfg.architecture.backbone, table.concat(top_layers(names), ", "))
    end
end

M.reference = {
    -- architecture
    ["architecture.backbone"] = { "string", values = { "resnet18", "resnet34" },
        about = "the network (BasicBlock ResNet, 1 input channel)" },
    ["architecture.dropout"] = { "number", min = 0, below = 1,
        about = "dropout before the last linear layer (0 = none)" },
    ["architecture.pool"] = { "string", values = { "GeM", "Avg" },
        about = "pooling over time and frequency (GeM: learned p, starts at 3)" },
    ["architecture.pretrained"] = { "boolean",
        check = function(v) if v then return "no pretrained weights ship with machrt (set it to false)" end end,
        about = "start from pretrained weights (none ship with machrt: false only)" },
    ["architecture.width"] = { "integer", min = 1,
        about = "machrt: channels of the first stage (64 in the reference; smaller is faster)" },
    -- audio
    ["audio.sample_rate"] = { "integer", min = 1, about = "Hz every file is resampled to" },
    ["audio.resampler"] = { "string", values = { "soxr", "torchaudio" }, before = "soxr",
        about = "machrt: how files are resampled to audio.sample_rate: 'soxr' (libsoxr, flat to 91 % "
             .. "of the lower Nyquist frequency, nothing above it) or 'torchaudio' (torchaudio's "
             .. "default sinc, as the reference recipe was trained: keeps more of the top of the band "
             .. "and leaks a little above the source's Nyquist frequency)" },
    ["audio.stft_window_size"] = { "integer", min = 2,
        rule = "with stft_window_size / 2 + 1 frequency bins at least audio.mel_frequency_bins",
        check = function(v, cfg)
            local bins, mels = v // 2 + 1, cfg.audio.mel_frequency_bins
            if bins < mels then
                return string.format("gives %d frequency bins, fewer than the %d mel filters "
                                     .. "(audio.mel_frequency_bins): most filters would be empty", bins, mels)
            end
        end,
        about = "STFT size and window length in samples (n_fft)" },
    ["audio.hop_size"] = { "integer", min = 1, about = "STFT hop in samples" },
    ["audio.mel_frequency_bins"] = { "integer", min = 1, about = "mel filters (rows of the spectrogram)" },
    ["audio.minimum_frequency"] = { "number", min = 0, about = "Hz, lowest mel filter edge" },
    ["audio.maximum_frequency"] = { "number", above = 0, rule = "above audio.minimum_frequency",
        check = function(v, cfg)
            if v <= cfg.audio.minimum_frequency then
                return string.format("must be above audio.minimum_frequency (%g)", cfg.audio.minimum_frequency)
            end
        end,
        about = "Hz, highest mel filter edge (above Nyquist gives all-zero filters, as in torchaudio)" },
    ["audio.spectrogram_normalization"] = { "string", values = { "No" },
        about = "'No': the dB values as they are" },
    ["audio.training_chunk_seconds"] = { "number", above = 0,
        about = "a training example: a random crop this long (shorter clips are zero-padded)" },
    ["audio.channel"] = { "integer", min = 1,
        about = "machrt: the channel of multi-channel files (1 = first; mono files have only 1)" },
    -- augmentation
    ["augmentation.mix_audio"] = { "string", values = { "Enabled", "Disabled" },
        about = "mix pairs of waveforms and their targets" },
    ["augmentation.mix_concentration"] = { "number", above = 0, about = "c of lambda ~ Beta(c, c)" },
    ["augmentation.mix_iterations"] = { "integer", min = 1, about = "mixes per batch" },
    ["augmentation.mix_probability"] = { "number", min = 0, max = 1, about = "chance a batch is mixed" },
    ["augmentation.mix_target"] = { "string", values = { "Ratio" },
        about = "targets mixed by the same ratio as the waves" },
    -- dataset
    ["dataset.audio_column"] = { "string", nonempty = true, about = "the CSV column of audio file names" },
    ["dataset.label_columns"] = { "list", nonempty = true,
        about = "the CSV label column(s); several = multilabel" },
    ["dataset.data_folder"] = { "string", check = existing(true),
        about = "folder the audio file names are relative to ('' with train_dataframe '' = the "
                .. "built-in synthetic corpus)" },
    ["dataset.train_dataframe"] = { "string",
        check = function(v, cfg)
            if v == "" and cfg.dataset.data_folder ~= "" then
                return "is empty but dataset.data_folder is set: give both, or neither for the "
                       .. "built-in synthetic corpus"
            end
            return existing(false)(v)
        end,
        about = "the training CSV" },
    ["dataset.validation_dataframe"] = { "string",
        check = function(v, cfg)
            if v == "" and cfg.dataset.validation_strategy == "custom" then
                return "is empty, and dataset.validation_strategy = custom needs it"
            end
            return existing(false)(v)
        end,
        about = "the validation CSV of validation_strategy = custom" },
    ["dataset.validation_strategy"] = { "string", values = { "kfold", "custom" },
        about = "kfold: validate on folds of the training CSV; custom: on validation_dataframe" },
    ["dataset.folds"] = { "list", item = "integer", min = 0, nonempty = true,
        about = "the folds to run, 0-based (one run folder each)" },
    ["dataset.group_fold_column"] = { "string",
        about = "rows with the same value stay in one fold ('Unnamed: 0' = pandas' row index)" },
    ["dataset.validation_size"] = { "number", above = 0, below = 1, rule = "giving k = round(1 / size) >= 2 folds",
        check = function(v)
            local k = math.floor(1 / v + 0.5)
            if k < 2 then return string.format("gives k = %d fold; k-fold needs at least 2", k) end
        end,
        about = "share of the data per validation fold" },
    ["dataset.data_sample"] = { "number", above = 0, max = 1, about = "share of the training CSV used" },
    ["dataset.cache"] = { "string", values = { "memory", "disk", "none" },
        about = "machrt: where decoded waves are kept between epochs" },
    ["dataset.cache_folder"] = { "string",
        check = function(v, cfg)
            if v == "" and cfg.dataset.cache == "disk" then return "is empty, and dataset.cache = disk needs it" end
        end,
        about = "machrt: the folder of dataset.cache = disk" },
    ["dataset.on_error"] = { "string", values = { "fail", "skip" },
        about = "machrt: an unreadable audio file stops the run (fail) or is left out and said (skip)" },
    -- environment
    ["environment.mixed_precision_training"] = { "boolean",
        about = "GPU: fp16 GEMM operands, loss scaling; CPU with avx512_bf16 or AMX: bf16 GEMM operands; "
            .. "fp32 master weights" },
    ["environment.mixed_precision_inference"] = { "boolean",
        about = "reduced-precision GEMMs at evaluation (fp16 on a GPU, bf16 on a CPU that has it)" },
    ["environment.number_of_workers"] = { "integer", min = 0,
        about = "data-loading threads (0 = load in the main thread)" },
    ["environment.seed"] = { "integer", min = -1, rule = "where -1 draws a seed (recorded in the run's config.json)",
        about = "seed of weights, crops, shuffling and folds" },
    ["environment.threads"] = { "integer", min = 0, about = "machrt: compute threads (0 = all cores)" },
    ["environment.device"] = { "string", values = { "auto", "cpu", "cuda" },
        about = "machrt: where the model runs (auto = cuda when a GPU is usable)" },
    ["environment.distributed"] = { "string", values = { "auto", "none", "mpi" },
        about = "machrt: data-parallel training (auto = over MPI when an MPI launcher started machrt)" },
    ["environment.sync_batchnorm"] = { "boolean",
        about = "machrt: batch-norm statistics over all ranks (else each rank keeps its own, as DDP)" },
    -- top level, logging
    ["experiment_name"] = { "string", nonempty = true,
        rule = "a single folder name: no '/', not '.' or '..' (machrt.run_folder checks it)",
        about = "names the run folder" },
    ["logging.number_of_audios"] = { "integer", min = 0,
        about = "worst validation clips pictured by run_interpretations" },
    ["output_directory"] = { "string", nonempty = true, about = "machrt: runs go to <this>/<experiment_name>/fold<k>" },
    -- prediction
    ["prediction.inference_chunk_method"] = { "string", values = { "Fix" },
        about = "Fix: non-overlapping chunks, mean of their sigmoid outputs" },
    ["prediction.inference_chunk_seconds"] = { "number", above = 0, about = "chunk length at inference" },
    ["prediction.max_inference_chunk_seconds"] = { "number", above = 0,
        rule = "at least prediction.inference_chunk_seconds",
        check = function(v, cfg)
            if v < cfg.prediction.inference_chunk_seconds then
                return string.format("is below prediction.inference_chunk_seconds (%g): no chunk would fit",
                                     cfg.prediction.inference_chunk_seconds)
            end
        end,
        about = "seconds of each file scored at most" },
    ["prediction.metric"] = { "string", values = { "F1", "Accuracy", "AUC", "LogLoss" },
        about = "the validation metric save_best_checkpoint and sweeps rank by" },
    ["prediction.probability_threshold"] = { "number", min = 0, max = 1,
        about = "decision threshold of binary and multilabel tasks" },
    -- training
    ["training.batch_size"] = { "integer", min = 1, about = "clips per batch" },
    ["training.epochs"] = { "integer", min = 1, about = "passes over the training data" },
    ["training.drop_last_batch"] = { "boolean", about = "drop the last incomplete training batch" },
    ["training.evaluation_epochs"] = { "integer", min = 1,
        about = "validate every this many epochs (and after the last)" },
    ["training.learning_rate"] = { "number", above = 0, about = "peak learning rate" },
    ["training.differential_learning_rate"] = { "number", min = 0,
        about = "learning rate of differential_learning_rate_layers" },
    ["training.differential_learning_rate_layers"] = { "list", rule = "names of layers of the backbone",
        check = unmatched_layers,
        about = "layers (conv1, layer4, fc, ...) that learn at differential_learning_rate" },
    ["training.optimizer"] = { "string", values = { "AdamW", "SGD" }, about = "SGD: momentum 0.9" },
    ["training.weight_decay"] = { "number", min = 0, about = "decoupled decay (not on biases and norm weights)" },
    ["training.schedule"] = { "string", values = { "Cosine", "Constant" },
        about = "learning rate per optimizer step after warmup" },
    ["training.warmup_epochs"] = { "number", min = 0, rule = "at most training.epochs",
        check = function(v, cfg)
            if v > cfg.training.epochs then
                return string.format("is more than training.epochs (%d)", cfg.training.epochs)
            end
        end,
        about = "linear warmup from 0" },
    ["training.gradient_clip"] = { "number", min = 0, about = "clip the global gradient norm (0 = no clipping)" },
    ["training.grad_accumulation"] = { "integer", min = 1, about = "batches per optimizer step" },
    ["training.loss_function"] = { "string", values = { "BCE" }, about = "BCE with logits on one-hot or mixed targets" },
    ["training.save_best_checkpoint"] = { "boolean",
        about = "keep best.safetensors of the best prediction.metric and score with it" },
    ["training.build_scoring_pipelines"] = { "boolean", about = "package a scorer folder after training" },
    ["training.run_interpretations"] = { "boolean", about = "write the interpretation pages after training" },
}

--- The reference keys plus an experiment's own (which may also replace a
--- reference key's spec). Returns a new table.
function M.with(extra)
    local out = {}
    for k, v in pairs(M.reference) do out[k] = v end
    for k, v in pairs(extra or {}) do out[k] = v end
    return out
end

return M
