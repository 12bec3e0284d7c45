-- ROC AUC and partial AUC of anomaly scores against scikit-learn
-- (tests/fixtures/anomaly_metrics_cases.lua, from gen_anomaly_fixtures.py),
-- and the cases where they are undefined.
local metrics = require "machrt.metrics"
local decide = require "machrt.anomaly.decide"
local A = require "assert"

local CASES = dofile("tests/fixtures/anomaly_metrics_cases.lua")

local tests = {}

tests["roc_auc and partial_auc match scikit-learn on every case"] = function()
    A.truthy(#CASES >= 5)
    for _, c in ipairs(CASES) do
        A.near(metrics.roc_auc(c.scores, c.abnormal), c.auc, 1e-12, c.name .. " auc")
        local pauc, mcclish = metrics.partial_auc(c.scores, c.abnormal, c.max_fpr)
        A.near(pauc, c.pauc, 1e-12, c.name .. " pauc (DCASE)")
        A.near(mcclish, c.pauc_mcclish, 1e-12, c.name .. " pauc (McClish)")
    end
end

tests["roc_curve runs from (0, 0) to (1, 1), one point per distinct score"] = function()
    local curve = metrics.roc_curve({ 0.1, 0.4, 0.4, 0.8 }, { false, true, false, true })
    A.eq(curve.fpr, { 0, 0, 0.5, 1 })
    A.eq(curve.tpr, { 0, 0.5, 1, 1 })
    A.eq(curve.thresholds[2], 0.8)
end

tests["AUC without abnormal or normal clips is undefined, not 0.5"] = function()
    local v, why = metrics.roc_auc({ 1, 2, 3 }, { false, false, false })
    A.eq(v, nil)
    A.eq(why, "no abnormal clip")
    v, why = metrics.partial_auc({ 1, 2 }, { true, true })
    A.eq(v, nil)
    A.eq(why, "no normal clip")
    A.raises(function() metrics.roc_auc({ 1, 0 / 0 }, { true, false }) end, "score 2", "not a number")
    A.raises(function() metrics.partial_auc({ 1, 2 }, { true, false }, 0) end, "max_fpr")
end

tests["a threshold flags at most the target fraction of normal scores"] = function()
    local s = {}
    for i = 1, 20 do s[i] = 21 - i end           -- 20 .. 1, unsorted order on purpose
    A.eq(decide.threshold(s, 0.05), 19)          -- only 20 is above: 1 of 20
    A.eq(decide.threshold(s, 0.1), 18)
    A.eq(decide.threshold(s, 0.01), 20)          -- nothing above
    A.eq(decide.threshold({ 3.5 }, 0.05), 3.5)   -- a single clip: its own score
    A.raises(function() decide.threshold({}, 0.05) end, "no normal score")
end

tests["the best score per machine lists ties"] = function()
    local ev = { mahalanobis = { per_machine = { m = { auc = 0.7 }, n = { auc = 0.4 }, u = {} } },
                 cosine = { per_machine = { m = { auc = 0.7 }, n = { auc = 0.9 }, u = {} } } }
    A.eq(decide.best_scores(ev, "m"), "cosine, mahalanobis")
    A.eq(decide.best_scores(ev, "n"), "cosine")
    A.eq(decide.best_scores(ev, "u"), nil)
end

tests["decision rates count flagged normal and abnormal clips per machine and in all"] = function()
    local items = { machine = { "a", "a", "a", "a", "b", "b", "b" },
                    condition = { "normal", "normal", "abnormal", "abnormal", "normal", "abnormal", nil } }
    local r = decide.decision_rates(items, { true, false, true, false, false, true, true })
    A.eq(table.concat(r.machines, ","), "a,b")
    local a, b = r.per_machine.a, r.per_machine.b
    A.eq(a.normal, 2); A.eq(a.false_positives, 1); A.eq(a.false_positive_rate, 0.5)
    A.eq(a.abnormal, 2); A.eq(a.detected, 1); A.eq(a.detection_rate, 0.5)
    A.eq(b.normal, 1); A.eq(b.false_positive_rate, 0); A.eq(b.detection_rate, 1)
    -- The clip without a condition is not counted.
    A.eq(r.all.normal, 3); A.eq(r.all.false_positives, 1); A.eq(r.all.abnormal, 3); A.eq(r.all.detected, 2)
    A.near(r.all.false_positive_rate, 1 / 3, 1e-15)
    local none = decide.decision_rates({ machine = { "a" }, condition = { "abnormal" } }, { false })
    A.eq(none.all.false_positive_rate, nil, "no normal clip: no rate, not 0")
    A.eq(none.all.detection_rate, 0)
end

return tests
