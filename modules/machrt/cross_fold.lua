-- machrt.cross_fold: what the folds of a k-fold run add up to, written once
-- every fold named in dataset.folds is done.
--
--   local cross_fold = require "machrt.cross_fold"
--   cross_fold.write(cfg, run)   -- after the fold loop; run from train.setup
--
-- Reads each fold's metrics.json and val_predictions.csv (the files the folds
-- left, so the summary always agrees with them; a resumed fold counts as the
-- others do) and writes into the experiment folder runs/<experiment_name>/:
--   cross_fold.json      each metric per fold, its mean and its sample standard
--                        deviation (n - 1 in the denominator), per-class
--                        precision/recall/F1 the same way, and the scores of
--                        the pooled out-of-fold predictions
--   oof_predictions.csv  every fold's val_predictions.csv rows (the CSV's own
--                        index first, as there) with a fold column added
-- and prints the table. A run of a single fold writes neither, nor does
-- validation_strategy = custom (each fold validates on the same clips).

local sys = require "machrt.sys"
local csv = require "machrt.data.csv"
local metrics = require "machrt.metrics"
local log = require "machrt.log"
local dist = require "machrt.dist"

local M = {}

M.SUMMARY = "cross_fold.json"
M.PREDICTIONS = "oof_predictions.csv"
M.METRICS = { "f1", "accuracy", "roc_auc", "loss" }

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

-- A NaN stays NaN in the mean (written as null): a fold that could not be
-- scored is never averaged away.
local function mean_std(values)
    local n, sum = #values, 0
    for _, v in ipairs(values) do sum = sum + v end
    local mean = sum / n
    local ss = 0
    for _, v in ipairs(values) do ss = ss + (v - mean) ^ 2 end
    return mean, n > 1 and math.sqrt(ss / (n - 1)) or 0 / 0
end

local function number(v) return type(v) == "number" and v or 0 / 0 end

local function stats(values)
    local mean, std = mean_std(values)
    return { values = values, mean = mean, std = std }
end

--- The mean and sample standard deviation of each metric over the folds'
--- metrics.json tables (m_list, in fold order): {metrics = {f1 = {values,
--- mean, std}, ...}, per_class = {[class] = {precision =, recall =, f1 =}}}.
function M.summarize(m_list)
    local out = { metrics = {}, per_class = {} }
    for _, key in ipairs(M.METRICS) do
        local values = {}
        for k, m in ipairs(m_list) do values[k] = number(m[key]) end
        out.metrics[key] = stats(values)
    end
    for c, class in ipairs(m_list[1].classes or {}) do
        local entry = {}
        for _, key in ipairs{ "precision", "recall", "f1" } do
            local values = {}
            for k, m in ipairs(m_list) do
                local pc = m.per_class and m.per_class[c]
                values[k] = number(pc and pc[key])
            end
            entry[key] = stats(values)
        end
        out.per_class[tostring(class)] = entry
    end
    return out
end

-- Every fold's val_predictions.csv as one table, with the fold added.
local function pooled_predictions(dirs, folds)
    local header, rows = nil, {}
    for k, dir in ipairs(dirs) do
        local df = csv.read(dir .. "/val_predictions.csv")
        if not header then
            header = {}
            for j, name in ipairs(df.columns) do header[j] = name end
            -- The unnamed index column reads back as pandas names it; written unnamed again.
            if header[1] == csv.INDEX_COLUMN then header[1] = "" end
            header[#header + 1] = "fold"
        elseif #df.columns + 1 ~= #header then
            fail("%s/val_predictions.csv has columns %s, other folds %s: the folds are not of one run",
                 dir, table.concat(df.columns, ","), table.concat(header, ",", 1, #header - 1))
        end
        for _, r in ipairs(df.rows) do
            local row = table.move(r, 1, #r, 1, {})
            row[#row + 1] = folds[k]
            rows[#rows + 1] = row
        end
    end
    return header, rows
end

-- The scores of the pooled out-of-fold predictions, or nil for a
-- multi-label run (whose label column does not hold the truth).
local function pooled_scores(header, rows, classes, cfg)
    if #cfg.dataset.label_columns ~= 1 then return nil end
    local class_of, p_col = {}, {}
    for c, name in ipairs(classes) do class_of[name] = c end
    local label_col
    for j, name in ipairs(header) do
        if name == "label" then label_col = j end
        local c = class_of[name:match("^p_(.*)$") or ""]
        if c then p_col[c] = j end
    end
    local probs, truth = {}, {}
    for i, r in ipairs(rows) do
        truth[i] = class_of[r[label_col]]
        probs[i] = {}
        for c = 1, #classes do probs[i][c] = tonumber(r[p_col[c]]) end
    end
    local m = metrics.classification(probs, truth, classes,
                                     { threshold = cfg.prediction.probability_threshold })
    return { clips = #rows, f1 = m.f1, accuracy = m.accuracy, roc_auc = m.roc_auc,
             per_class = m.per_class, confusion = m.confusion }
end

--- Writes cross_fold.json and oof_predictions.csv for the folds of
--- cfg.dataset.folds once each has its metrics.json, prints the table and
--- returns the summary; returns nil (saying why) when there is one fold or
--- some fold is not done yet.
function M.write(cfg, run)
    if not dist.is_main() then return nil end -- under mpirun rank 0 alone reads and writes the run folders
    local folds = {}
    for k, f in ipairs(cfg.dataset.folds) do folds[k] = math.tointeger(tonumber(f)) end
    if #folds < 2 then return nil end
    if cfg.dataset.validation_strategy ~= "kfold" then
        -- Every fold validates on the same validation_dataframe: nothing is out of fold.
        log.info("cross-fold summary: none, dataset.validation_strategy is '%s' (the folds do not "
                 .. "partition the data)", tostring(cfg.dataset.validation_strategy))
        return nil
    end
    -- The experiment folder holds the folds (a resumed fold is given by its own path).
    local parent = run.dir_of(run.folds[1]):gsub("/$", ""):match("^(.*)/[^/]*$") or "."
    local dirs, m_list = {}, {}
    for k, fold in ipairs(folds) do
        dirs[k] = string.format("%s/fold%d", parent, fold)
        local path = dirs[k] .. "/metrics.json"
        m_list[k] = sys.stat(path) and sys.read_json(path) or nil
        if not m_list[k] then
            log.info("cross-fold summary: fold %d has no metrics.json yet (%s); it is written when "
                     .. "every fold of dataset.folds is done", fold, dirs[k])
            return nil
        end
    end
    local summary = M.summarize(m_list)
    summary.folds, summary.std = folds, "sample standard deviation (n - 1)"
    summary.classes = m_list[1].classes
    local header, rows = pooled_predictions(dirs, folds)
    summary.out_of_fold = pooled_scores(header, rows, summary.classes, cfg)
    summary.predictions = M.PREDICTIONS
    sys.write_file(parent .. "/" .. M.PREDICTIONS, csv.table_text(header, rows))
    sys.write_file(parent .. "/" .. M.SUMMARY, sys.json_encode(summary, { indent = true }) .. "\n")

    local head = { "metric" }
    for _, fold in ipairs(folds) do head[#head + 1] = "fold " .. fold end
    table.move({ "mean", "std", "out-of-fold" }, 1, 3, #head + 1, head)
    local lines = {}
    for _, key in ipairs(M.METRICS) do
        local s = summary.metrics[key]
        local line = { key }
        table.move(s.values, 1, #s.values, 2, line)
        line[#line + 1], line[#line + 2] = s.mean, s.std
        line[#line + 1] = summary.out_of_fold and summary.out_of_fold[key] or ""
        lines[#lines + 1] = line
    end
    log.info("cross-fold summary over folds %s (std: sample, n - 1; out-of-fold: the %d pooled "
             .. "validation clips) -> %s/%s", table.concat(folds, ", "), #rows, parent, M.SUMMARY)
    log.table(head, lines)
    return summary
end

return M
