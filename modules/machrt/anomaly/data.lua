-- The data of an anomaly-detection run: which clips train (normal ones
-- only), which validate (normal and abnormal), and which machine each clip
-- belongs to (machine type + model id).
--
--   local split = adata.prepare(cfg, fold)
--   -- split.machines = {"fan/id_00", ...} (sorted), split.types = {"fan", ...}
--   -- split.train, split.val = items: files, rows, targets (one-hot over
--   --   machines), index (machine number), machine, type, model_id,
--   --   condition ("normal" / "abnormal" / nil), abnormal (booleans)
--   -- split.can_evaluate: the validation clips carry a condition
--   -- split.in_sample: the validation rows whose file is a training clip too
local data = require "machrt.data"
local folds = require "machrt.data.folds"
local log = require "machrt.log"
local train = require "machrt.train"

local M = {}

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

--- The anomaly experiment's keys for machrt.schema (train.setup checks them
--- with the reference keys before any work; validate below adds the checks
--- across sections).
M.SCHEMA = {
    ["anomaly.method"] = { "string", values = { "embedding", "autoencoder" },
        about = "the detector: a machine-id embedding network, or the DCASE 2020 autoencoder" },
    ["anomaly.score"] = { "string", values = { "ensemble", "mixture_ensemble", "mahalanobis", "frames", "deltas",
                                                "mixture", "cosine", "nll" },
        about = "embedding: how far a clip lies from its machine's normal clips (ensemble: mahalanobis, frames "
                .. "and deltas, each standardised by the machine's normal scores; mixture_ensemble: the frames' "
                .. "mixture of levelled frames in place of their Gaussian)" },
    ["anomaly.features"] = { "string", values = { "moments", "levelled", "spectrum", "network", "both" },
        about = "embedding: what a clip's embedding holds: each log-mel bin's mean, spread and kurtosis over "
                .. "time, the same of frames levelled (each minus its mean over the bins), its mean and spread, "
                .. "the network's pooled output, or network and spectrum" },
    ["anomaly.head"] = { "string", values = { "arcface", "adacos", "softmax" },
        about = "embedding: the classifier head trained on machine ids" },
    ["anomaly.margin"] = { "number", min = 0, max = math.pi / 2, about = "ArcFace's angular margin (radians)" },
    ["anomaly.scale"] = { "number", above = 0, about = "ArcFace's logit scale" },
    ["anomaly.shrinkage"] = { "string", rule = "ledoit-wolf, or a number in [0, 1]",
        check = function(v)
            local x = tonumber(v)
            if v ~= "ledoit-wolf" and not (x and x >= 0 and x <= 1) then
                return "must be 'ledoit-wolf' or a number in [0, 1]"
            end
        end,
        about = "covariance shrinkage of the normal embeddings" },
    ["anomaly.target_false_positive_rate"] = { "number", min = 0, max = 1,
        about = "each machine's threshold flags this fraction of its normal clips" },
    ["anomaly.max_fpr"] = { "number", above = 0, max = 1, about = "pAUC over false-positive rates 0 .. max_fpr" },
    ["autoencoder.frames"] = { "integer", min = 1, about = "log-mel frames of context per vector" },
    ["autoencoder.hidden"] = { "integer", min = 1, about = "units of the hidden dense layers" },
    ["autoencoder.bottleneck"] = { "integer", min = 1, about = "units of the bottleneck layer" },
    ["autoencoder.epochs"] = { "integer", min = 1, about = "passes over each machine type's vectors" },
    ["autoencoder.batch_size"] = { "integer", min = 1, about = "vectors per batch" },
    ["autoencoder.learning_rate"] = { "number", above = 0, about = "Adam's learning rate" },
    ["autoencoder.validation_split"] = { "number", min = 0, below = 1,
        about = "the last share of the vectors measures the validation loss (keras' validation_split)" },
    ["audio.mel_scale"] = { "string", values = { "htk", "slaney" }, about = "the mel scale of the filterbank" },
    ["audio.mel_norm"] = { "string", values = { "none", "slaney" }, about = "filter normalisation (slaney: equal area)" },
    ["dataset.model_id_column"] = { "string", nonempty = true,
        about = "the CSV column of model ids (missing: one machine per type)" },
    ["prediction.metric"] = { "string", values = { "AUC" }, about = "anomaly runs report AUC and pAUC" },
    ["dataset.condition_column"] = { "string", nonempty = true,
        about = "the CSV column of normal / abnormal (missing: trained, not evaluated)" },
}

--- The checks the schema's per-key rules cannot make; values arrive
--- checked against M.SCHEMA.
function M.validate(cfg)
    local a = cfg.anomaly
    -- The default is a word, so --anomaly.shrinkage=0.2 arrives as text (checked by the schema).
    if a.shrinkage ~= "ledoit-wolf" then a.shrinkage = tonumber(a.shrinkage) end
    local ds = cfg.dataset
    if #ds.label_columns ~= 1 then
        fail("dataset.label_columns must name one column (the machine type), got %d", #ds.label_columns)
    end
    if cfg.environment.mixed_precision_training then
        log.info("environment.mixed_precision_training: anomaly runs train in float32; the setting is not used")
    end
end

-- Row numbers as the user sees them in the CSV (1 = first data row).
local function with_row_ids(df)
    local ids = {}
    for i = 1, df:nrows() do ids[i] = tostring(i) end
    df:add_column("__row", ids)
    return df
end

local function read(path, key, ds)
    local df = with_row_ids(data.read_csv(path))
    if df:nrows() == 0 then fail("%s %s has no data rows (only a header)", key, df.source) end
    df:require_columns({ ds.audio_column, ds.label_columns[1] }, key)
    return df
end

-- The condition of each row ("normal" / "abnormal"), or nil without the column.
local function conditions(df, ds)
    if not df:has_column(ds.condition_column) then return nil end
    local out = {}
    for i, v in ipairs(df:column(ds.condition_column)) do
        if v ~= "normal" and v ~= "abnormal" then
            fail("%s, row %d: column '%s' must be 'normal' or 'abnormal', got '%s'", df.source, i,
                 ds.condition_column, tostring(v))
        end
        out[i] = v
    end
    return out
end

local function machine_of(type_name, model_id)
    if model_id == nil then return type_name end
    return type_name .. "/id_" .. model_id
end

-- The clips of a dataframe as items (see the header); machine_index maps a
-- machine name to its number, or is nil while the machines are collected.
local function items_of(df, ds, machine_index, nmachines)
    local cond = conditions(df, ds)
    local has_id = df:has_column(ds.model_id_column)
    local it = { df = df, files = df:column(ds.audio_column), rows = {}, targets = {}, index = {},
                 machine = {}, type = {}, model_id = {}, condition = cond or {}, abnormal = {} }
    local types, ids = df:column(ds.label_columns[1]), has_id and df:column(ds.model_id_column)
    for i = 1, df:nrows() do
        it.rows[i] = math.tointeger(tonumber(df:get(i, "__row")))
        it.type[i] = types[i]
        it.model_id[i] = ids and ids[i] or ""
        it.machine[i] = machine_of(types[i], ids and ids[i] or nil)
        it.abnormal[i] = cond ~= nil and cond[i] == "abnormal"
        if machine_index then
            local k = machine_index[it.machine[i]]
            if not k then
                fail("%s, row %d: machine '%s' has no normal clip in the training data, so it cannot be "
                     .. "scored", df.source, it.rows[i], it.machine[i])
            end
            it.index[i] = k
            local row = {}
            for c = 1, nmachines do row[c] = c == k and 1 or 0 end
            it.targets[i] = row
        end
    end
    return it, cond ~= nil, has_id
end

--- A loader of whole clips of `items` (Fix chunks, in order), as the
--- validation loader of train.loaders; close it (it is a to-be-closed
--- value, with the loader in .val).
function M.chunk_loader(cfg, items)
    return setmetatable({ val = train.chunk_loader(cfg, items, { name = "clip loader" }) },
                        { __close = function(l) l.val:close() end })
end

-- Fold ids stratified by machine and condition: the rows of each (machine,
-- condition) pair, in a seeded random order, take folds 0, 1, ..., k-1 in
-- turn, so every fold holds each machine's normal and abnormal clips when
-- it has k of each (a
-- split by rows alone can leave a machine with only one condition, and its
-- AUC undefined). A "fold" column is used as it is.
local function stratified_folds(df, ds, seed)
    if df:has_column("fold") then return data.assign_folds(df, ds) end
    local vs = tonumber(ds.validation_size)
    if not vs or not (vs > 0 and vs < 1) then
        fail("dataset.validation_size must be a number in (0, 1), got %s", tostring(ds.validation_size))
    end
    local k = math.floor(1 / vs + 0.5)
    if k < 2 then fail("dataset.validation_size = %s gives k = %d folds; k-fold needs at least 2", tostring(vs), k) end
    local it = items_of(df, ds)
    local groups, order = {}, {}
    for i = 1, df:nrows() do
        local key = it.machine[i] .. "\0" .. (it.condition[i] or "")
        if not groups[key] then groups[key] = {}; order[#order + 1] = key end
        table.insert(groups[key], i)
    end
    table.sort(order)
    local ids, next_fold = {}, 0
    for g, key in ipairs(order) do
        -- The turn goes on from group to group, so small groups still fill every fold.
        local rows = groups[key]
        for _, j in ipairs(folds.permutation(#rows, seed * 1000 + g)) do
            ids[rows[j]] = next_fold % k
            next_fold = next_fold + 1
        end
    end
    return ids, k
end

-- What the clips hold, said once per run before any work: the channel the
-- model hears when they have several (the others are not used), and their
-- lengths when they differ (Fix chunks pad or cut them). A file whose header
-- cannot be read is left to the loader, which fails or skips it as
-- dataset.on_error says.
local function describe_audio(cfg, split)
    local audio = require "machrt.audio"
    local clips = require "machrt.data.clips"
    local seen, channels, shortest, longest = {}, {}, math.huge, 0
    for _, items in ipairs{ split.train, split.val } do
        for _, file in ipairs(items.files) do
            local path = clips.resolve(cfg.dataset.data_folder, file)
            if not seen[path] then
                seen[path] = true
                local ok, info = pcall(audio.info, path)
                if ok then
                    channels[info.channels] = (channels[info.channels] or 0) + 1
                    shortest, longest = math.min(shortest, info.seconds), math.max(longest, info.seconds)
                end
            end
        end
    end
    local multi = {}
    for n, count in pairs(channels) do
        if n > 1 then multi[#multi + 1] = string.format("%d clips with %d channels", count, n) end
    end
    table.sort(multi)
    if #multi > 0 then
        log.once("anomaly channels", "audio: %s: channel %d is used (audio.channel), the other channels are not",
                 table.concat(multi, ", "), cfg.audio.channel)
    end
    if longest > 0 and longest - shortest > 1e-3 then
        log.once("anomaly lengths", "audio: clips last %.2f to %.2f s (whole clips are scored in Fix chunks "
                 .. "of prediction.inference_chunk_seconds = %g s)", shortest, longest,
                 cfg.prediction.inference_chunk_seconds)
    end
end

-- The validation clips that are training clips too (the same file), by
-- row: their scores are in-sample, which the log and metrics.json say.
local function in_sample(train, val)
    local trained, out = {}, {}
    for _, f in ipairs(train.files) do trained[f] = true end
    for i, f in ipairs(val.files) do
        if trained[f] then out[#out + 1] = i end
    end
    return out
end

--- Reads the dataframe(s) and splits them (see the header).
function M.prepare(cfg, fold)
    local ds = cfg.dataset
    local df = read(ds.train_dataframe, "dataset.train_dataframe", ds)
    if ds.data_sample < 1 then df = df:sample(ds.data_sample, cfg.environment.seed) end
    local train_df, val_df
    if ds.validation_dataframe ~= "" then
        log.info("validation: %s (dataset.validation_dataframe; no fold is split off)", ds.validation_dataframe)
        train_df = df
        val_df = read(ds.validation_dataframe, "dataset.validation_dataframe", ds)
    else
        train_df, val_df = data.split(df, (stratified_folds(df, ds, cfg.environment.seed)), fold)
    end
    local train_cond = conditions(train_df, ds)
    if not df:has_column(ds.model_id_column) then
        log.info("dataset: no '%s' column in %s: each machine type is one machine", ds.model_id_column, df.source)
    end
    if train_cond then
        local normal = train_df:filter(function(row, i) return train_cond[i] == "normal" end)
        local dropped = train_df:nrows() - normal:nrows()
        if dropped > 0 then
            log.info("training data: %d abnormal clips left out (anomaly detection trains on normal clips only)",
                     dropped)
        end
        train_df = normal
    else
        log.info("dataset: no '%s' column in %s: every training clip is taken as normal", ds.condition_column,
                 df.source)
    end
    if train_df:nrows() == 0 then
        fail("%s: no normal clip to train on (column '%s' holds no 'normal' row in the training part)",
             df.source, ds.condition_column)
    end
    local collected = items_of(train_df, ds)
    local machines, types, seen_type = {}, {}, {}
    local counts = {}
    for i, m in ipairs(collected.machine) do
        if not counts[m] then machines[#machines + 1] = m end
        counts[m] = (counts[m] or 0) + 1
        local t = collected.type[i]
        if not seen_type[t] then seen_type[t] = true; types[#types + 1] = t end
    end
    table.sort(machines)
    table.sort(types)
    local index = {}
    for k, m in ipairs(machines) do index[m] = k end
    local train = items_of(train_df, ds, index, #machines)
    local val, can_evaluate = items_of(val_df, ds, index, #machines)
    if not can_evaluate then
        log.info("validation data: no '%s' column: clips are scored, but AUC and pAUC cannot be computed",
                 ds.condition_column)
    end
    local overlap = in_sample(train, val)
    if #overlap > 0 then
        log.info("validation: %d of the %d clips are training clips too: their scores are in-sample (the "
                 .. "detector learnt from them), so an AUC over them overstates what it does on new clips",
                 #overlap, #val.files)
    end
    local split = { machines = machines, types = types, counts = counts, train = train, val = val,
                    can_evaluate = can_evaluate, classes = machines, in_sample = overlap }
    describe_audio(cfg, split)
    return split
end

return M
