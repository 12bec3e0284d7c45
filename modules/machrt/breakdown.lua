-- machrt.breakdown: the score tables of a set of predictions, as header +
-- rows, shared by the HTML report (machrt.interpret) and
-- scripts/evaluate.lua.
--
--   local breakdown = require "machrt.breakdown"
--   local m = metrics.classification(probs, truth, classes)
--   breakdown.confusion(m, classes)     -- rows true class, columns predicted
--   breakdown.per_class(m, classes)     -- class, precision, recall, f1, support
--   breakdown.by_column("model_id", values, probs, truth, classes, opts)
--       -- one row per value of the column: clips, errors, accuracy, macro F1
--   breakdown.columns(df, skip)         -- the columns worth a breakdown

local metrics = require "machrt.metrics"

local M = {}

--- The confusion matrix: header {"true \ predicted", classes...} and one
--- row per true class.
function M.confusion(m, classes)
    local header, rows = { "true \\ predicted" }, {}
    for c, name in ipairs(classes) do header[c + 1] = name end
    for a, name in ipairs(classes) do
        local r = { name }
        for b = 1, #classes do r[b + 1] = m.confusion[a][b] end
        rows[a] = r
    end
    return header, rows
end

--- Per-class precision, recall, F1 and support.
function M.per_class(m, classes)
    local rows = {}
    for c, s in ipairs(m.per_class) do rows[c] = { classes[c], s.precision, s.recall, s.f1, s.support } end
    return { "class", "precision", "recall", "f1", "support" }, rows
end

-- Values in a readable order: numerically when every one is a number
-- (snr_db: -6, 0, 6), as text otherwise.
local function sorted_values(values)
    local list, seen, numeric = {}, {}, true
    for _, v in ipairs(values) do
        if not seen[v] then
            seen[v] = true
            list[#list + 1] = v
            if not tonumber(v) then numeric = false end
        end
    end
    table.sort(list, function(a, b)
        if numeric and tonumber(a) ~= tonumber(b) then return tonumber(a) < tonumber(b) end
        return tostring(a) < tostring(b)
    end)
    return list
end

--- Scores per value of one column: values[i] is row i's value, probs the
--- rows' probabilities (a list of lists), truth their 1-based classes; opts
--- as metrics.classification's (threshold). Returns the header {name,
--- "clips", "errors", "accuracy", "f1"} and one row per value (F1: the
--- macro F1 over the classes present in that group's truth or predictions).
function M.by_column(name, values, probs, truth, classes, opts)
    local rows = {}
    for _, v in ipairs(sorted_values(values)) do
        local p, t = {}, {}
        for i, x in ipairs(values) do
            if x == v then p[#p + 1], t[#t + 1] = probs[i], truth[i] end
        end
        local m = metrics.classification(p, t, classes, opts)
        local wrong = 0
        for i, c in ipairs(m.predicted) do if c ~= t[i] then wrong = wrong + 1 end end
        rows[#rows + 1] = { v, #t, wrong, m.accuracy, m.f1 }
    end
    return { name, "clips", "errors", "accuracy", "f1" }, rows
end

--- The columns of a dataframe worth a breakdown: all but those named in
--- `skip` (a set: the audio and label columns), the index, machrt's own
--- (__row, ...), a fold column, and a column that tells every row apart (a
--- checksum, a clip id: one group per clip says nothing); at most
--- `max_values` distinct values when given.
function M.columns(df, skip, max_values)
    local out = {}
    for _, name in ipairs(df.columns) do
        if not skip[name] and not name:match("^__") and not name:match("^Unnamed: %d+$") and name ~= "fold" then
            local distinct, n = {}, 0
            for _, v in ipairs(df:column(name)) do
                if not distinct[v] then distinct[v], n = true, n + 1 end
            end
            local names_each_row = n == df:nrows() and n > 1
            if not names_each_row and (not max_values or n <= max_values) then out[#out + 1] = name end
        end
    end
    return out
end

return M
