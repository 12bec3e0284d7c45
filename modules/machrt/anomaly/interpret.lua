-- The interpretations of an anomaly run, in dir/interpretations/ and
-- dir/index.html: the ROC curve of each machine, its score histograms
-- (normal and abnormal, the threshold drawn), and the log-mel pictures of
-- the most anomalous normal clips and the least anomalous abnormal ones
-- (the mistakes a threshold is most likely to make).
local sys = require "machrt.sys"
local clips = require "machrt.data.clips"
local interpret = require "machrt.interpret"
local metrics = require "machrt.metrics"
local plot = require "machrt.plot"
local report = require "machrt.report"

local M = {}

M.FOLDER = "interpretations"

local BINS = 20

-- Per machine, the validation clips' indices.
local function by_machine(items)
    local groups, order = {}, {}
    for i, m in ipairs(items.machine) do
        if not groups[m] then groups[m] = {}; order[#order + 1] = m end
        table.insert(groups[m], i)
    end
    table.sort(order)
    return groups, order
end

local function roc_panel(m, idx, items, scores)
    local s, ab = {}, {}
    for k, i in ipairs(idx) do s[k], ab[k] = scores[i], items.abnormal[i] end
    local curve, why = metrics.roc_curve(s, ab)
    local auc = metrics.roc_auc(s, ab)
    local series = { { name = "chance", x = { 0, 1 }, y = { 0, 1 } } }
    if curve then table.insert(series, 1, { name = "ROC", x = curve.fpr, y = curve.tpr }) end
    return { title = curve and string.format("%s  AUC %.3f", m, auc) or string.format("%s  (%s)", m, why),
             xlabel = "false-positive rate", ylabel = "true-positive rate", ylim = { 0, 1 }, series = series }
end

local function histogram_panel(m, idx, items, scores, threshold)
    local lo, hi = threshold, threshold
    for _, i in ipairs(idx) do lo, hi = math.min(lo, scores[i]), math.max(hi, scores[i]) end
    if hi <= lo then hi = lo + 1 end
    local width = (hi - lo) / BINS
    local x, normal, abnormal = {}, {}, {}
    for b = 1, BINS do x[b], normal[b], abnormal[b] = lo + (b - 0.5) * width, 0, 0 end
    local top = 1
    for _, i in ipairs(idx) do
        local b = math.min(BINS, math.floor((scores[i] - lo) / width) + 1)
        local list = items.abnormal[i] and abnormal or normal
        list[b] = list[b] + 1
        top = math.max(top, list[b])
    end
    return { title = m .. ": clips per score bin", xlabel = "anomaly score", ylabel = "clips",
             series = { { name = "normal", x = x, y = normal }, { name = "abnormal", x = x, y = abnormal },
                        { name = "threshold", x = { threshold, threshold }, y = { 0, top } } } }
end

--- Writes the pictures and index.html; o = {split, scores, decisions,
--- thresholds, evaluation (nil without conditions), cfg, number_of_audios}.
--- Returns the path of index.html.
function M.write(dir, o)
    local out = dir .. "/" .. M.FOLDER
    sys.mkdir(out)
    local items, scores, cfg = o.split.val, o.scores, o.cfg
    local groups, order = by_machine(items)
    local images, rows = {}, {}
    if o.evaluation then
        local roc, hist = {}, {}
        for _, m in ipairs(order) do
            roc[#roc + 1] = roc_panel(m, groups[m], items, scores)
            hist[#hist + 1] = histogram_panel(m, groups[m], items, scores, o.thresholds[m])
        end
        plot.grid(out .. "/roc.png", roc, { title = "ROC curve per machine" })
        plot.grid(out .. "/histograms.png", hist, { title = "anomaly scores: normal and abnormal clips" })
        images[#images + 1] = { title = "ROC curve per machine", file = M.FOLDER .. "/roc.png" }
        images[#images + 1] = { title = "score histograms with the threshold", file = M.FOLDER .. "/histograms.png" }
        for _, m in ipairs(order) do
            local r = o.evaluation.per_machine[m]
            rows[#rows + 1] = { m, r.normal, r.abnormal, r.auc or r.undefined, r.pauc or "", o.thresholds[m] }
        end
    end
    -- Relative to each machine's threshold, so machines with different scales rank together.
    local normal, abnormal = {}, {}
    for i = 1, #items.files do
        local margin = scores[i] - o.thresholds[items.machine[i]]
        table.insert(items.abnormal[i] and abnormal or normal, { i = i, margin = margin })
    end
    table.sort(normal, function(x, y) return x.margin > y.margin or (x.margin == y.margin and x.i < y.i) end)
    table.sort(abnormal, function(x, y) return x.margin < y.margin or (x.margin == y.margin and x.i < y.i) end)
    local n = o.number_of_audios or 5
    local function pictures(list, label, prefix)
        for k = 1, math.min(n, #list) do
            local i = list[k].i
            local png = string.format("%s_%d.png", prefix, k)
            local title = string.format("%s: %s (%s), score %.4g, threshold %.4g", label, items.files[i],
                                        items.machine[i], scores[i], o.thresholds[items.machine[i]])
            local picture = {
                title = string.format("%s (%s): score %.4g, threshold %.4g", interpret.short_path(items.files[i], 50),
                                      items.machine[i], scores[i], o.thresholds[items.machine[i]]),
                max_seconds = cfg.prediction.max_inference_chunk_seconds }
            local ok, err = pcall(interpret.clip_picture, out .. "/" .. png,
                                  clips.resolve(cfg.dataset.data_folder, items.files[i]), cfg.audio, picture)
            if ok then
                images[#images + 1] = { title = title .. "; log-mel spectrogram, " .. interpret.SPECTROGRAM_AXES,
                                        file = M.FOLDER .. "/" .. png }
            else
                rows[#rows + 1] = { items.files[i], "no picture: " .. tostring(err) }
            end
        end
    end
    pictures(normal, "most anomalous normal clip", "normal_most_anomalous")
    pictures(abnormal, "least anomalous abnormal clip", "abnormal_least_anomalous")
    local ev = o.evaluation
    return report.write_index(dir, {
        title = cfg.experiment_name .. ": anomaly detection",
        facts = { { "method", cfg.anomaly.method }, { "score", cfg.anomaly.score },
                  { "validation clips", #items.files },
                  { "mean AUC", ev and ev.mean_auc or "undefined (no machine with normal and abnormal clips)" },
                  { "mean pAUC (DCASE, max_fpr " .. cfg.anomaly.max_fpr .. ")", ev and ev.mean_pauc or "undefined" },
                  { "threshold target false-positive rate", cfg.anomaly.target_false_positive_rate } },
        tables = { { title = "per machine", header = { "machine", "normal", "abnormal", "AUC", "pAUC", "threshold" },
                     rows = rows } },
        images = images,
    })
end

return M
