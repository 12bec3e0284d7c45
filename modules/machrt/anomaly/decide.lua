-- Decisions and scores of an anomaly-detection run: a threshold per
-- machine from normal clips only, AUC and pAUC per machine and per machine
-- type, val_scores.csv and metrics.json.
local sys = require "machrt.sys"
local csv = require "machrt.data.csv"
local metrics = require "machrt.metrics"
local log = require "machrt.log"

local M = {}

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

--- The decision threshold of a list of normal scores at a target false-
--- positive rate: the smallest of them that at most a `fpr` fraction of
--- them exceed (a clip is anomalous when its score is above it).
function M.threshold(normal_scores, fpr)
    local n = #normal_scores
    if n == 0 then fail("threshold: no normal score to choose a threshold from") end
    local sorted = {}
    for i, v in ipairs(normal_scores) do sorted[i] = v end
    table.sort(sorted)
    local k = math.max(1, math.min(n, math.ceil((1 - fpr) * n - 1e-9)))
    return sorted[k]
end

--- Thresholds per machine from the scores of the training (normal) clips.
function M.thresholds(split, train_scores, fpr)
    local by_machine = {}
    for i, m in ipairs(split.train.machine) do
        by_machine[m] = by_machine[m] or {}
        table.insert(by_machine[m], train_scores[i])
    end
    local out = {}
    for _, m in ipairs(split.machines) do out[m] = M.threshold(by_machine[m], fpr) end
    return out
end

--- Whether a list of scores has one for each of n clips.
function M.complete(scores, n)
    for i = 1, n do if type(scores[i]) ~= "number" then return false end end
    return true
end

--- is_anomaly per validation clip.
function M.decide(items, scores, thresholds)
    local out = {}
    for i, m in ipairs(items.machine) do out[i] = scores[i] > thresholds[m] end
    return out
end

--- How the thresholds decided on the validation clips: per machine, the
--- normal clips flagged (the false-positive rate the target promised) and
--- the abnormal clips found, and both over all machines. Clips without a
--- condition are not counted.
function M.decision_rates(items, decisions)
    local per, order = {}, {}
    local all = { normal = 0, false_positives = 0, abnormal = 0, detected = 0 }
    for i, m in ipairs(items.machine) do
        local c = items.condition and items.condition[i]
        if c == "normal" or c == "abnormal" then
            if not per[m] then
                per[m] = { normal = 0, false_positives = 0, abnormal = 0, detected = 0 }
                order[#order + 1] = m
            end
            for _, r in ipairs({ per[m], all }) do
                if c == "normal" then
                    r.normal = r.normal + 1
                    if decisions[i] then r.false_positives = r.false_positives + 1 end
                else
                    r.abnormal = r.abnormal + 1
                    if decisions[i] then r.detected = r.detected + 1 end
                end
            end
        end
    end
    local function rates(r)
        r.false_positive_rate = r.normal > 0 and r.false_positives / r.normal or nil
        r.detection_rate = r.abnormal > 0 and r.detected / r.abnormal or nil
        return r
    end
    for _, m in ipairs(order) do rates(per[m]) end
    table.sort(order)
    return { per_machine = per, machines = order, all = rates(all) }
end

--- Logs the decision rates against the target false-positive rate and
--- where the thresholds came from (rates.thresholds_from), so that a
--- miscalibrated threshold is seen, not assumed.
function M.log_decisions(rates, target, label)
    local a = rates.all
    if a.normal == 0 and a.abnormal == 0 then return end
    local function pct(k, n) return n > 0 and string.format("%d of %d (%.1f %%)", k, n, 100 * k / n) or "none" end
    log.info("%s: the thresholds (from %s; target %.1f %% false positives) flag %s normal validation clips "
             .. "and %s abnormal ones", label, rates.thresholds_from, 100 * target, pct(a.false_positives, a.normal),
             pct(a.detected, a.abnormal))
    if a.normal > 0 and a.false_positive_rate > 2 * target + 0.05 then
        log.info("%s: that is well above the target: new normal clips score higher than the ones the "
                 .. "thresholds came from", label)
    end
end

-- AUC, pAUC of the clips `idx` (a list of item indices).
local function group_scores(items, scores, idx, max_fpr)
    local s, ab, nab = {}, {}, 0
    for k, i in ipairs(idx) do
        s[k], ab[k] = scores[i], items.abnormal[i]
        if ab[k] then nab = nab + 1 end
    end
    local r = { clips = #idx, abnormal = nab, normal = #idx - nab }
    local auc, why = metrics.roc_auc(s, ab)
    if auc then
        r.auc = auc
        r.pauc, r.pauc_mcclish = metrics.partial_auc(s, ab, max_fpr)
    else
        r.undefined = why
    end
    return r
end

local function mean_of(list, key)
    local sum, n = 0, 0
    for _, r in ipairs(list) do
        if r[key] then sum, n = sum + r[key], n + 1 end
    end
    return n > 0 and sum / n or nil
end

--- AUC and pAUC (DCASE 2020's: partial area up to max_fpr / max_fpr; and
--- McClish's, as scikit-learn) per machine (type + model id) and per
--- machine type (its clips pooled), and their means over the machines
--- (DCASE's average). A group without abnormal or without normal clips has
--- no AUC: `undefined` says why.
function M.evaluate(split, scores, max_fpr)
    local items = split.val
    local by_machine, by_type, machine_order, type_order = {}, {}, {}, {}
    for i = 1, #items.files do
        local m, t = items.machine[i], items.type[i]
        if not by_machine[m] then by_machine[m] = {}; machine_order[#machine_order + 1] = m end
        if not by_type[t] then by_type[t] = {}; type_order[#type_order + 1] = t end
        table.insert(by_machine[m], i)
        table.insert(by_type[t], i)
    end
    table.sort(machine_order)
    table.sort(type_order)
    local ev = { max_fpr = max_fpr, per_machine = {}, per_type = {}, machines = machine_order, types = type_order }
    local list = {}
    for _, m in ipairs(machine_order) do
        ev.per_machine[m] = group_scores(items, scores, by_machine[m], max_fpr)
        list[#list + 1] = ev.per_machine[m]
    end
    for _, t in ipairs(type_order) do
        local r = group_scores(items, scores, by_type[t], max_fpr)
        local ids = {}
        for _, m in ipairs(machine_order) do
            if items.type[by_machine[m][1]] == t then ids[#ids + 1] = ev.per_machine[m] end
        end
        r.mean_auc_over_ids, r.mean_pauc_over_ids = mean_of(ids, "auc"), mean_of(ids, "pauc")
        ev.per_type[t] = r
    end
    ev.mean_auc, ev.mean_pauc = mean_of(list, "auc"), mean_of(list, "pauc")
    ev.mean_pauc_mcclish = mean_of(list, "pauc_mcclish")
    return ev
end

local function fmt(v) return v and string.format("%.4f", v) or "-" end

--- Logs the per-machine table; says which groups have no AUC and why.
function M.log_evaluation(ev, label)
    local rows = {}
    for _, m in ipairs(ev.machines) do
        local r = ev.per_machine[m]
        rows[#rows + 1] = { m, r.normal, r.abnormal, fmt(r.auc), fmt(r.pauc), r.undefined or "" }
    end
    log.info("%s: AUC and pAUC (max_fpr %g) per machine", label, ev.max_fpr)
    log.table({ "machine", "normal", "abnormal", "AUC", "pAUC", "undefined" }, rows)
    for _, m in ipairs(ev.machines) do
        local r = ev.per_machine[m]
        if r.undefined then log.info("%s: AUC undefined for %s: %s", label, m, r.undefined) end
    end
    if ev.mean_auc then
        log.info("%s: mean AUC %.4f, mean pAUC %.4f over the machines", label, ev.mean_auc, ev.mean_pauc)
    else
        log.info("%s: no machine has both normal and abnormal validation clips: AUC is undefined", label)
    end
end

--- The score(s) with the highest AUC on machine m, "a, b" when tied; nil
--- when none has an AUC there.
function M.best_scores(evaluations, m)
    local top, best = -1, {}
    for name, ev in pairs(evaluations) do
        local a = ev.per_machine[m] and ev.per_machine[m].auc
        if a and a > top then top, best = a, { name } elseif a and a == top then best[#best + 1] = name end
    end
    if #best == 0 then return nil end
    table.sort(best)
    return table.concat(best, ", ")
end

--- With several scores (the embedding detector's): AUC per machine of each,
--- and which one wins there.
function M.log_comparison(evaluations, label)
    local names = {}
    for name in pairs(evaluations) do names[#names + 1] = name end
    if #names < 2 then return end
    table.sort(names)
    local any = evaluations[names[1]]
    local rows = {}
    for _, m in ipairs(any.machines) do
        local row = { m }
        for _, name in ipairs(names) do row[#row + 1] = fmt(evaluations[name].per_machine[m].auc) end
        row[#row + 1] = M.best_scores(evaluations, m) or "-"
        rows[#rows + 1] = row
    end
    local mean_row = { "mean" }
    for _, name in ipairs(names) do mean_row[#mean_row + 1] = fmt(evaluations[name].mean_auc) end
    rows[#rows + 1] = mean_row
    local header = { "machine" }
    for _, name in ipairs(names) do header[#header + 1] = "AUC " .. name end
    header[#header + 1] = "best"
    log.info("%s: AUC per machine of each score", label)
    log.table(header, rows)
end

M.SCORE_COLUMNS = { "audio", "label", "model_id", "condition", "anomaly_score", "is_anomaly" }

--- val_scores.csv: one row per validation clip.
function M.write_scores(dir, split, scores, decisions)
    local items, rows = split.val, {}
    for i = 1, #items.files do
        rows[i] = { items.files[i], items.type[i], items.model_id[i], items.condition[i] or "", scores[i],
                    decisions[i] and "true" or "false" }
    end
    sys.write_file(dir .. "/val_scores.csv", csv.table_text(M.SCORE_COLUMNS, rows, { digits = 8 }))
end

--- metrics.json: the evaluation of the chosen score, the alternatives'
--- evaluations, per machine, which score gave the highest AUC ("a, b"
--- when tied), how many validation clips are training clips too
--- (split.in_sample), and `decisions`: the thresholds' rates on the
--- validation clips (decision_rates, with `thresholds_from`).
function M.write_metrics(dir, cfg, evaluations, chosen, thresholds, split, decisions)
    local best = {}
    local main = evaluations[chosen]
    if main then
        for _, m in ipairs(main.machines) do best[m] = M.best_scores(evaluations, m) end
    end
    sys.write_file(dir .. "/metrics.json", sys.json_encode({
        method = cfg.anomaly.method, score = chosen, pauc_definition =
            "DCASE 2020 Task 2: area under the ROC curve for FPR 0..max_fpr divided by max_fpr "
            .. "(pauc_mcclish: McClish's standardised area, as scikit-learn's roc_auc_score(max_fpr))",
        max_fpr = cfg.anomaly.max_fpr, target_false_positive_rate = cfg.anomaly.target_false_positive_rate,
        evaluation = main, alternatives = evaluations, best_score_per_machine = best, thresholds = thresholds,
        in_sample_validation_clips = split and #split.in_sample or nil,
        decisions = decisions,
    }, { indent = true }) .. "\n")
end

return M
