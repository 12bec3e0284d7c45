-- machrt.metrics against scikit-learn: tests/fixtures/metrics_cases.lua is
-- made by tests/fixtures/gen_metrics_fixtures.py (random cases, ties in the
-- scores, a class never predicted, a class absent from the truth, one row).

local mt = require "machrt"
local metrics = require "machrt.metrics"
local A = require "assert"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

local CASES = dofile("tests/fixtures/metrics_cases.lua")

local function check_case(case, r, tol)
    local C = #case.probs[1]
    A.near(r.f1, case.f1, tol, case.name .. " f1")
    A.near(r.accuracy, case.accuracy, tol, case.name .. " accuracy")
    A.near(r.roc_auc, case.roc_auc, tol, case.name .. " roc_auc")
    A.eq(r.confusion, case.confusion, case.name .. " confusion")
    A.eq(r.predicted, case.predicted, case.name .. " predicted")
    A.eq(#r.per_class, C, case.name .. " per_class count")
    for c = 1, C do
        local pc = r.per_class[c]
        local what = case.name .. " class " .. c
        A.near(pc.precision, case.precision[c], tol, what .. " precision")
        A.near(pc.recall, case.recall[c], tol, what .. " recall")
        A.near(pc.f1, case.class_f1[c], tol, what .. " f1")
        A.eq(pc.support, case.support[c], what .. " support")
    end
end

for _, case in ipairs(CASES) do
    test("sklearn case " .. case.name, function()
        local r = metrics.classification(case.probs, case.true_index)
        check_case(case, r, 1e-12)
        A.eq(r.roc_auc_skipped, case.roc_auc_skipped, case.name .. " roc_auc_skipped")
    end)
end

test("fixture covers the edge cases it claims", function()
    local names = {}
    for _, c in ipairs(CASES) do names[c.name] = c end
    for _, n in ipairs { "ties", "never_predicted", "absent_from_truth", "single_row", "argmax_ties" } do
        A.truthy(names[n], "case " .. n)
    end
    A.eq(names.never_predicted.precision[3], 0)
    A.eq(#names.single_row.true_index, 1)
end)

test("tensor input gives the list result", function()
    -- The "ties" probabilities are multiples of 0.1: distinct as float64,
    -- still distinct (and ties still ties) as float32.
    local case
    for _, c in ipairs(CASES) do if c.name == "ties" then case = c end end
    local r = metrics.classification(mt.tensor(case.probs), case.true_index)
    check_case(case, r, 1e-6)
end)

test("class names label per_class and roc_auc_skipped", function()
    local r = metrics.classification({ { 0.7, 0.2, 0.1 }, { 0.1, 0.8, 0.1 }, { 0.6, 0.3, 0.1 } },
        { 1, 2, 1 }, { "fan", "pump", "valve" })
    A.eq(r.per_class[3].class, "valve")
    A.eq(r.roc_auc_skipped, { "valve" })
    A.eq(r.f1, 1)
    A.eq(r.roc_auc, 1)
    local plain = metrics.classification({ { 0.7, 0.3 } }, { 1 })
    A.eq(plain.per_class[2].class, 2)
    A.truthy(plain.roc_auc ~= plain.roc_auc, "roc_auc is NaN when no class can be scored")
end)

test("hand-checked two-class example", function()
    -- true: a a b b; scores for b: 0.1 0.6 0.6 0.9 -> AUC = (1 + 0.5 + 1 + 1) / 4
    local probs = { { 0.9, 0.1 }, { 0.4, 0.6 }, { 0.4, 0.6 }, { 0.1, 0.9 } }
    local r = metrics.classification(probs, { 1, 1, 2, 2 })
    A.near(r.accuracy, 0.75, 1e-15)
    A.eq(r.confusion, { { 1, 1 }, { 0, 2 } })
    A.near(r.per_class[1].precision, 1, 1e-15)
    A.near(r.per_class[2].precision, 2 / 3, 1e-15)
    A.near(r.roc_auc, 0.875, 1e-15)
end)

test("bad input gives clear errors", function()
    A.raises(function() local r = metrics.classification({}, {}) return r end, "no rows")
    A.raises(function() local r = metrics.classification({ { 0.5, 0.5 } }, { 3 }) return r end,
        "row 1", "not in 1..2")
    A.raises(function() local r = metrics.classification({ { 0.5, 0.5 } }, { 1, 2 }) return r end,
        "expected 1 true classes")
    A.raises(function() local r = metrics.classification({ { 0.5, 0 / 0 } }, { 1 }) return r end,
        "probs[1][2]")
    A.raises(function() local r = metrics.classification({ { 0.5, 0.5 }, { 1 } }, { 1, 1 }) return r end,
        "row 2")
    A.raises(function() local r = metrics.classification(mt.zeros { 4 }, { 1, 1, 1, 1 }) return r end,
        "n x C")
    A.raises(function() local r = metrics.classification({ { 1, 0 } }, { 1 }, { "a" }) return r end,
        "classes must list 2")
end)

-- Hand-computed: 4 rows, 3 labels, threshold 0.5.
--   probs                 targets   predicted labels
--   0.9 0.2 0.6           1 0 1     1 0 1   (exact)
--   0.4 0.7 0.1           1 1 0     0 1 0
--   0.8 0.5 0.3           1 0 0     1 1 0
--   0.1 0.3 0.9           0 0 1     0 0 1   (exact)
-- label 1: tp 2, fp 0, fn 1 -> P 1, R 2/3, F1 0.8
-- label 2: tp 1, fp 1, fn 0 -> P 0.5, R 1, F1 2/3
-- label 3: tp 2, fp 0, fn 0 -> F1 1
test("multilabel: thresholded per-label scores, subset accuracy, macro AUC", function()
    local probs = { { 0.9, 0.2, 0.6 }, { 0.4, 0.7, 0.1 }, { 0.8, 0.5, 0.3 }, { 0.1, 0.3, 0.9 } }
    local targets = { { 1, 0, 1 }, { 1, 1, 0 }, { 1, 0, 0 }, { 0, 0, 1 } }
    local r = metrics.multilabel(probs, targets, 0.5, { "a", "b", "c" })
    A.near(r.per_class[1].f1, 0.8, 1e-12)
    A.near(r.per_class[1].recall, 2 / 3, 1e-12)
    A.near(r.per_class[2].precision, 0.5, 1e-12)
    A.near(r.per_class[2].f1, 2 / 3, 1e-12)
    A.near(r.per_class[3].f1, 1, 1e-12)
    A.near(r.f1, (0.8 + 2 / 3 + 1) / 3, 1e-12)
    A.near(r.accuracy, 0.5, 1e-12)
    -- AUC label 1: positives {0.9, 0.4, 0.8} vs negative {0.1}: 1; label 2:
    -- positive {0.7} vs {0.2, 0.5, 0.3}: 1; label 3: positives {0.6, 0.9} vs
    -- {0.1, 0.3}: 1.
    A.near(r.roc_auc, 1, 1e-12)
    A.near(metrics.multilabel(probs, targets, 0.95).f1, 0, 1e-12, "nothing reaches 0.95")
end)

test("two classes with a threshold predict class 2 when it reaches it", function()
    local probs = { { 0.7, 0.3 }, { 0.4, 0.6 }, { 0.5, 0.45 } }
    A.eq(metrics.classification(probs, { 1, 2, 2 }).predicted, { 1, 2, 1 })
    A.eq(metrics.classification(probs, { 1, 2, 2 }, nil, { threshold = 0.25 }).predicted, { 2, 2, 2 })
    -- More than two classes: the threshold does not apply.
    A.eq(metrics.classification({ { 0.2, 0.3, 0.5 } }, { 3 }, nil, { threshold = 0.1 }).predicted, { 3 })
end)

return T

