-- machrt.metrics: classification scores for validation and interpretation
-- reports, with scikit-learn's definitions (checked against it by
-- tests/fixtures/gen_metrics_fixtures.py).
local M = {}

local function fail(fmt, ...)
    error(string.format(fmt, ...), 3)
end

-- probs as a Lua list of n rows of C numbers (from a tensor or a list).
local function prob_rows(probs)
    if type(probs) == "userdata" then
        local ok, dim = pcall(function() return probs:dim() end)
        if not ok then fail("classification: probs must be a tensor or a list of lists") end
        if dim ~= 2 then fail("classification: probs must be n x C, got a %d-d tensor", dim) end
        return probs:totable(), probs:size(1), probs:size(2)
    end
    if type(probs) ~= "table" then
        fail("classification: probs must be an n x C tensor or a list of lists, got %s", type(probs))
    end
    local n = #probs
    local C = type(probs[1]) == "table" and #probs[1] or 0
    for i = 1, n do
        if type(probs[i]) ~= "table" or #probs[i] ~= C then
            fail("classification: probs row %d must be a list of %d numbers", i, C)
        end
    end
    return probs, n, C
end

-- Mann-Whitney form of the ROC AUC for one class: the probability that a
-- positive row scores above a negative one, ties counted half (equal to
-- the area under the trapezoidal ROC curve that scikit-learn computes).
local function auc(scores, positive)
    local n = #scores
    local order = {}
    for i = 1, n do order[i] = i end
    table.sort(order, function(a, b) return scores[a] < scores[b] end)
    local rank_sum, npos = 0, 0
    local i = 1
    while i <= n do
        local j = i
        while j < n and scores[order[j + 1]] == scores[order[i]] do j = j + 1 end
        local rank = (i + j) / 2                -- mean rank of a run of ties
        for k = i, j do
            if positive[order[k]] then
                rank_sum = rank_sum + rank
                npos = npos + 1
            end
        end
        i = j + 1
    end
    local nneg = n - npos
    return (rank_sum - npos * (npos + 1) / 2) / (npos * nneg)
end

--- Scores argmax predictions of an {n, C} probability matrix (tensor or
--- list of lists) against 1-based true classes. Returns {f1, accuracy,
--- per_class = {{class, precision, recall, f1, support}, ...}, roc_auc,
--- roc_auc_skipped = {class, ...}, confusion = C x C (rows true, columns
--- predicted), predicted = {1-based class per row}}.
---
--- As scikit-learn with zero_division=0: a class with no predicted (true)
--- rows has precision (recall) 0; macro F1 averages the classes that occur
--- in the truth or the predictions (f1_score's default labels). Macro ROC
--- AUC is one-vs-rest over the classes that have both positive and negative
--- rows; the others are listed in roc_auc_skipped, and roc_auc is NaN when
--- no class can be scored (e.g. a single row).
function M.classification(probs, true_index, classes, opts)
    local rows, n, C = prob_rows(probs)
    -- Two classes and a threshold: class 2 when its probability reaches the
    -- threshold (prediction.probability_threshold), as a binary classifier.
    local threshold = opts and opts.threshold
    if threshold ~= nil and C ~= 2 then threshold = nil end
    if n == 0 then fail("classification: no rows to score") end
    if C == 0 then fail("classification: probs has no class columns") end
    if type(true_index) ~= "table" or #true_index ~= n then
        fail("classification: expected %d true classes (one per row), got %s", n,
            type(true_index) == "table" and tostring(#true_index) or type(true_index))
    end
    if classes ~= nil and (type(classes) ~= "table" or #classes ~= C) then
        fail("classification: classes must list %d names (one per column)", C)
    end
    local function name(c) return classes and classes[c] or c end

    local confusion, predicted = {}, {}
    for a = 1, C do
        confusion[a] = {}
        for b = 1, C do confusion[a][b] = 0 end
    end
    local correct = 0
    for i = 1, n do
        local t = true_index[i]
        if math.type(t) ~= "integer" or t < 1 or t > C then
            fail("classification: true class of row %d is %s, not in 1..%d", i, tostring(t), C)
        end
        local row = rows[i]
        local best = 1
        for c = 1, C do
            local p = row[c]
            if type(p) ~= "number" or p ~= p then
                fail("classification: probs[%d][%d] is %s, not a number", i, c, tostring(p))
            end
            if p > row[best] then best = c end   -- the first maximum, as numpy's argmax
        end
        if threshold then best = row[2] >= threshold and 2 or 1 end
        predicted[i] = best
        confusion[t][best] = confusion[t][best] + 1
        if best == t then correct = correct + 1 end
    end

    local per_class, f1_sum, f1_count = {}, 0, 0
    for c = 1, C do
        local tp, support, npred = confusion[c][c], 0, 0
        for k = 1, C do
            support = support + confusion[c][k]
            npred = npred + confusion[k][c]
        end
        local fp, fn = npred - tp, support - tp
        local precision = npred > 0 and tp / npred or 0
        local recall = support > 0 and tp / support or 0
        local f1 = (2 * tp + fp + fn) > 0 and 2 * tp / (2 * tp + fp + fn) or 0
        per_class[c] = { class = name(c), precision = precision, recall = recall, f1 = f1,
                                          support = support }
        if support > 0 or npred > 0 then
            f1_sum = f1_sum + f1
            f1_count = f1_count + 1
        end
    end

    local auc_sum, auc_count, skipped = 0, 0, {}
    for c = 1, C do
        local scores, positive, npos = {}, {}, 0
        for i = 1, n do
            scores[i] = rows[i][c]
            positive[i] = true_index[i] == c
            if positive[i] then npos = npos + 1 end
        end
        if npos == 0 or npos == n then
            skipped[#skipped + 1] = name(c)
        else
            auc_sum = auc_sum + auc(scores, positive)
            auc_count = auc_count + 1
        end
    end

    return {
        f1 = f1_sum / f1_count,
        accuracy = correct / n,
        per_class = per_class,
        roc_auc = auc_count > 0 and auc_sum / auc_count or 0 / 0,
        roc_auc_skipped = skipped,
        confusion = confusion,
        predicted = predicted,
    }
end

--- Multi-label scores: probs {n, C} against targets (n lists of C values,
--- 1 = the label applies); a label is predicted when its probability
--- reaches `threshold`. Returns {f1 = macro F1 over the labels, accuracy =
--- the fraction of rows with every label right (scikit-learn's subset
--- accuracy), per_class, roc_auc = macro over labels with both positive and
--- negative rows, roc_auc_skipped, predicted = {1-based argmax per row}}.
function M.multilabel(probs, targets, threshold, classes)
    local rows, n, C = prob_rows(probs)
    if n == 0 then fail("multilabel: no rows to score") end
    if type(targets) ~= "table" or #targets ~= n then
        fail("multilabel: expected %d target rows, got %s", n, type(targets) == "table" and #targets or type(targets))
    end
    threshold = threshold or 0.5
    local function name(c) return classes and classes[c] or c end
    local per_class, f1_sum, exact = {}, 0, 0
    local row_ok = {}
    for i = 1, n do row_ok[i] = true end
    local auc_sum, auc_count, skipped = 0, 0, {}
    for c = 1, C do
        local tp, fp, fn, support = 0, 0, 0, 0
        local scores, positive, npos = {}, {}, 0
        for i = 1, n do
            local truth = (targets[i][c] or 0) >= 0.5
            local pred = rows[i][c] >= threshold
            if truth then support = support + 1 end
            if pred and truth then tp = tp + 1 elseif pred then fp = fp + 1 elseif truth then fn = fn + 1 end
            if pred ~= truth then row_ok[i] = false end
            scores[i], positive[i] = rows[i][c], truth
            if truth then npos = npos + 1 end
        end
        local precision = (tp + fp) > 0 and tp / (tp + fp) or 0
        local recall = (tp + fn) > 0 and tp / (tp + fn) or 0
        local f1 = (2 * tp + fp + fn) > 0 and 2 * tp / (2 * tp + fp + fn) or 0
        per_class[c] = { class = name(c), precision = precision, recall = recall, f1 = f1, support = support }
        f1_sum = f1_sum + f1
        if npos == 0 or npos == n then
            skipped[#skipped + 1] = name(c)
        else
            auc_sum, auc_count = auc_sum + auc(scores, positive), auc_count + 1
        end
    end
    local predicted = {}
    for i = 1, n do
        if row_ok[i] then exact = exact + 1 end
        local best = 1
        for c = 2, C do if rows[i][c] > rows[i][best] then best = c end end
        predicted[i] = best
    end
    return { f1 = f1_sum / C, accuracy = exact / n, per_class = per_class,
                      roc_auc = auc_count > 0 and auc_sum / auc_count or 0 / 0, roc_auc_skipped = skipped,
                      predicted = predicted }
end

-- ---- anomaly detection: binary ROC, AUC and partial AUC ---------------------

-- scores (numbers, higher = more anomalous) and abnormal (booleans) as lists
-- of one length; the counts of abnormal and normal entries.
local function binary_inputs(fn, scores, abnormal)
    if type(scores) ~= "table" or type(abnormal) ~= "table" or #scores ~= #abnormal then
        fail("%s: scores and abnormal must be lists of one length", fn)
    end
    local npos = 0
    for i = 1, #scores do
        local v = scores[i]
        if type(v) ~= "number" or v ~= v then fail("%s: score %d is %s, not a number", fn, i, tostring(v)) end
        if abnormal[i] then npos = npos + 1 end
    end
    return npos, #scores - npos
end

-- Why a binary AUC cannot be computed, or nil.
local function undefined(npos, nneg)
    if npos == 0 and nneg == 0 then return "no clips" end
    if npos == 0 then return "no abnormal clip" end
    if nneg == 0 then return "no normal clip" end
    return nil
end

--- The ROC curve of anomaly scores: lists fpr and tpr from (0, 0) to (1, 1),
--- one point per distinct score (scikit-learn's roc_curve with
--- drop_intermediate = False, plus its leading (0, 0)), and the thresholds
--- (a clip is flagged when its score is >= the threshold). nil and the
--- reason when the curve is undefined (no abnormal or no normal clip).
function M.roc_curve(scores, abnormal)
    local npos, nneg = binary_inputs("roc_curve", scores, abnormal)
    local why = undefined(npos, nneg)
    if why then return nil, why end
    local order = {}
    for i = 1, #scores do order[i] = i end
    table.sort(order, function(a, b) return scores[a] > scores[b] end)
    local fpr, tpr, thresholds = { 0 }, { 0 }, { math.huge }
    local tp, fp, i = 0, 0, 1
    while i <= #order do
        local v = scores[order[i]]
        while i <= #order and scores[order[i]] == v do
            if abnormal[order[i]] then tp = tp + 1 else fp = fp + 1 end
            i = i + 1
        end
        fpr[#fpr + 1], tpr[#tpr + 1], thresholds[#thresholds + 1] = fp / nneg, tp / npos, v
    end
    return { fpr = fpr, tpr = tpr, thresholds = thresholds }
end

--- ROC AUC of anomaly scores against abnormal flags (scikit-learn's
--- roc_auc_score), or nil and the reason when it is undefined.
function M.roc_auc(scores, abnormal)
    local npos, nneg = binary_inputs("roc_auc", scores, abnormal)
    local why = undefined(npos, nneg)
    if why then return nil, why end
    return auc(scores, abnormal)
end

--- Partial AUC over false-positive rates 0..max_fpr (default 0.1). Returns
--- pauc, as DCASE 2020 Task 2 defines it (the area under the ROC curve up to
--- max_fpr, divided by max_fpr: 1 is perfect, max_fpr / 2 is chance), and
--- mcclish, McClish's standardised area that scikit-learn's
--- roc_auc_score(max_fpr = ...) reports (0.5 is chance). The curve is
--- interpolated linearly at max_fpr, as scikit-learn does. nil and the
--- reason when undefined.
function M.partial_auc(scores, abnormal, max_fpr)
    max_fpr = max_fpr or 0.1
    if type(max_fpr) ~= "number" or not (max_fpr > 0 and max_fpr <= 1) then
        fail("partial_auc: max_fpr must be in (0, 1], got %s", tostring(max_fpr))
    end
    local curve, why = M.roc_curve(scores, abnormal)
    if not curve then return nil, why end
    local fpr, tpr = curve.fpr, curve.tpr
    local area = 0
    for k = 2, #fpr do
        local x0, x1, y0, y1 = fpr[k - 1], fpr[k], tpr[k - 1], tpr[k]
        if x0 >= max_fpr then break end
        if x1 > max_fpr then
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        end
        area = area + (x1 - x0) * (y0 + y1) / 2
    end
    local min_area, max_area = max_fpr * max_fpr / 2, max_fpr
    return area / max_fpr, 0.5 * (1 + (area - min_area) / (max_area - min_area))
end

return M
