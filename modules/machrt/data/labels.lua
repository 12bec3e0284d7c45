-- machrt.data.labels: label columns to training targets.
--
-- One label column is a multiclass task: one-hot targets over the sorted
-- distinct values (the class order every prediction file and metric uses).
-- Several label columns are a multi-label task: each column is one class and
-- holds that class's target (0/1, or a fraction for soft labels).
local mt = require "machrt"

local M = {}

local function fail(fmt, ...)
    error(string.format(fmt, ...), 3)
end

local function data_error(fmt, ...)
    error(string.format(fmt, ...), 0)
end

-- A flat row-major list of n*C numbers as an {n, C} float32 tensor.
local function matrix(flat, n, C)
    if n == 0 then return mt.zeros { 0, C } end
    return mt.tensor(flat):reshape { n, C }
end

--- One-hot targets: an {n, C} float32 tensor with a 1 at (i, index[i]).
function M.one_hot(index, C)
    if math.type(C) ~= "integer" or C < 1 then
        fail("one_hot: C must be a positive integer, got %s", tostring(C))
    end
    if type(index) ~= "table" then fail("one_hot: index must be a list of classes") end
    local n = #index
    local flat = {}
    for i = 1, n * C do flat[i] = 0 end
    for i = 1, n do
        local c = index[i]
        if math.type(c) ~= "integer" or c < 1 or c > C then
            fail("one_hot: index[%d] = %s is not a class in 1..%d", i, tostring(c), C)
        end
        flat[(i - 1) * C + c] = 1
    end
    return matrix(flat, n, C)
end

-- Sorted distinct values: numerically when every value is a number (so
-- "10" comes after "9"), else as strings.
local function sorted_classes(values)
    local seen, classes = {}, {}
    local numeric = true
    for _, v in ipairs(values) do
        if not seen[v] then
            seen[v] = true
            classes[#classes + 1] = v
            if numeric and tonumber(v) == nil then numeric = false end
        end
    end
    if numeric then
        table.sort(classes, function(a, b)
            local x, y = tonumber(a), tonumber(b)
            if x ~= y then return x < y end
            return a < b
        end)
    else
        table.sort(classes)
    end
    return classes
end

local function check_cells(df, name, values)
    for i, v in ipairs(values) do
        if v == "" then
            data_error("label column '%s' in %s, row %d: empty label", name, df.source, i)
        end
    end
end

--- Encodes the label columns of a dataframe: returns {classes = {...},
--- targets = {n, C} float32 tensor, index = {1-based class per row}}.
--- `classes` (optional, single label column only) fixes the class list, e.g.
--- to encode a validation frame with the training frame's classes.
function M.encode(df, label_columns, classes)
    if type(label_columns) == "string" then label_columns = { label_columns } end
    if type(label_columns) ~= "table" or #label_columns == 0 then
        fail("encode: label_columns must be a column name or a non-empty list of names")
    end
    df:require_columns(label_columns, "dataset.label_columns")
    local n = df:nrows()

    if #label_columns == 1 then
        local name = label_columns[1]
        local values = df:column(name)
        check_cells(df, name, values)
        if classes == nil then
            classes = sorted_classes(values)
            if #classes == 0 then
                data_error("label column '%s' in %s: no rows, so no classes to encode", name, df.source)
            end
        elseif type(classes) ~= "table" or #classes == 0 then
            fail("encode: classes must be a non-empty list")
        end
        local pos = {}
        for c, v in ipairs(classes) do pos[tostring(v)] = c end
        local index = {}
        for i, v in ipairs(values) do
            local c = pos[tostring(v)]
            if not c then
                data_error("label column '%s' in %s, row %d: '%s' is not one of the classes: %s",
                    name, df.source, i, v, table.concat(classes, ", "))
            end
            index[i] = c
        end
        return { classes = classes, targets = M.one_hot(index, #classes), index = index }
    end

    -- Multi-label: each column is a class; values are kept as they are.
    if classes ~= nil then fail("encode: classes applies to a single label column only") end
    local C = #label_columns
    local flat, index = {}, {}
    for c, name in ipairs(label_columns) do
        local values = df:column(name)
        check_cells(df, name, values)
        for i, v in ipairs(values) do
            local x = tonumber(v)
            if x == nil or x ~= x then
                data_error("label column '%s' in %s, row %d: '%s' is not a number", name, df.source, i, v)
            end
            flat[(i - 1) * C + c] = x
        end
    end
    for i = 1, n do
        local best = 1
        for c = 2, C do
            if flat[(i - 1) * C + c] > flat[(i - 1) * C + best] then best = c end
        end
        index[i] = best
    end
    local names = table.move(label_columns, 1, C, 1, {})
    return { classes = names, targets = matrix(flat, n, C), index = index }
end

return M
