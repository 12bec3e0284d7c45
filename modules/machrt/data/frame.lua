-- machrt.data.frame: a small, string-valued DataFrame for the experiment
-- tables (one row per clip: file, label, fold, ...).
--
-- Rows are stored as Lua lists in column order; the frame owns the row
-- tables it is given. Methods that select rows (filter, take, sample) copy
-- the rows they keep, so adding a column to one frame never changes another.
-- Errors name the frame's `source` (the CSV path when read from a file).
local DataFrame = {}
DataFrame.__index = DataFrame
DataFrame.__name = "machrt.DataFrame"

-- A bad argument: reported at the line that called the method.
local function fail(fmt, ...)
    error(string.format(fmt, ...), 3)
end

-- Bad data (a missing column, a cell that is not a number): the message
-- names the source, column and row, so no code position is added.
local function data_error(fmt, ...)
    error(string.format(fmt, ...), 0)
end

local function is_cell(v)
    local t = type(v)
    return t == "string" or t == "number"
end

--- Creates a frame from a list of column names and a list of rows (lists of
--- values in column order); `source` names the frame in error messages.
function DataFrame.new(columns, rows, source)
    if type(columns) ~= "table" then fail("DataFrame.new: columns must be a list of names") end
    rows = rows or {}
    if type(rows) ~= "table" then fail("DataFrame.new: rows must be a list of lists") end
    local index, cols = {}, {}
    for j, name in ipairs(columns) do
        if type(name) ~= "string" then
            fail("DataFrame.new: column %d name must be a string, got %s", j, type(name))
        end
        if index[name] then fail("DataFrame.new: duplicate column name '%s'", name) end
        index[name] = j
        cols[j] = name
    end
    local ncol = #cols
    for i, row in ipairs(rows) do
        if type(row) ~= "table" then fail("DataFrame.new: row %d is not a list", i) end
        for j = 1, ncol do
            if not is_cell(row[j]) then
                fail("DataFrame.new: row %d, column '%s': expected a string or number, got %s",
                    i, cols[j], type(row[j]))
            end
        end
        if #row ~= ncol then
            fail("DataFrame.new: row %d has %d values, expected %d (one per column)", i, #row, ncol)
        end
    end
    return setmetatable({
        columns = cols,
        rows = rows,
        source = source or "<dataframe>",
        _index = index,
    }, DataFrame)
end

-- A frame with the same columns and source over the given rows.
function DataFrame:_derive(rows)
    local cols = table.move(self.columns, 1, #self.columns, 1, {})
    local index = {}
    for j, name in ipairs(cols) do index[name] = j end
    return setmetatable({ columns = cols, rows = rows, source = self.source, _index = index },
        DataFrame)
end

local function copy_row(row) return table.move(row, 1, #row, 1, {}) end

--- Number of rows.
function DataFrame:nrows() return #self.rows end

--- Whether the frame has a column with this name.
function DataFrame:has_column(name) return self._index[name] ~= nil end

function DataFrame:_missing(name, context)
    return string.format("%scolumn '%s' not found in %s; columns present: %s",
        context and (context .. ": ") or "", tostring(name), self.source,
        table.concat(self.columns, ", "))
end

-- Column number of `name`, or the missing-column error.
function DataFrame:_col(name)
    local j = self._index[name]
    if not j then data_error("%s", self:_missing(name)) end
    return j
end

--- The values of column `name` as a new list.
function DataFrame:column(name)
    local j = self:_col(name)
    local out = {}
    for i, row in ipairs(self.rows) do out[i] = row[j] end
    return out
end

--- Checks that every named column exists (a name or a list of names);
--- `context` (such as "dataset.audio_column") starts the error message.
function DataFrame:require_columns(names, context)
    if type(names) ~= "table" then names = { names } end
    for _, name in ipairs(names) do
        if not self._index[name] then data_error("%s", self:_missing(name, context)) end
    end
    return self
end

--- The value at row i (1-based) of column `name`.
function DataFrame:get(i, name)
    local j = self:_col(name)
    local row = self.rows[i]
    if not row then fail("row %s out of range 1..%d in %s", tostring(i), #self.rows, self.source) end
    return row[j]
end

--- Row i as a table column name -> value.
function DataFrame:row(i)
    local row = self.rows[i]
    if not row then fail("row %s out of range 1..%d in %s", tostring(i), #self.rows, self.source) end
    local t = {}
    for j, name in ipairs(self.columns) do t[name] = row[j] end
    return t
end

--- A new frame with the rows for which fn(row_table, i) is true.
function DataFrame:filter(fn)
    if type(fn) ~= "function" then fail("DataFrame:filter: expected a function") end
    local kept = {}
    for i = 1, #self.rows do
        if fn(self:row(i), i) then kept[#kept + 1] = copy_row(self.rows[i]) end
    end
    return self:_derive(kept)
end

--- A new frame with the rows at the given 1-based indices, in that order.
function DataFrame:take(indices)
    if type(indices) ~= "table" then fail("DataFrame:take: expected a list of row indices") end
    local n = #self.rows
    local kept = {}
    for k, i in ipairs(indices) do
        local row = type(i) == "number" and self.rows[i]   -- 2.0 indexes like 2
        if not row then
            fail("DataFrame:take: index %d is %s, not a row of %s (1..%d)", k, tostring(i),
                self.source, n)
        end
        kept[k] = copy_row(row)
    end
    return self:_derive(kept)
end

--- A deterministic random subset of round(fraction * n) rows (at least one
--- when the frame is not empty), in their original order; fraction 1 keeps
--- every row.
function DataFrame:sample(fraction, seed)
    if type(fraction) ~= "number" or not (fraction > 0 and fraction <= 1) then
        fail("DataFrame:sample: fraction must be in (0, 1], got %s", tostring(fraction))
    end
    if seed ~= nil and math.tointeger(seed) == nil then
        fail("DataFrame:sample: seed must be an integer, got %s", tostring(seed))
    end
    local n = #self.rows
    if fraction == 1 then return self:take(self:_all()) end
    local m = math.floor(fraction * n + 0.5)
    if m < 1 and n > 0 then m = 1 end
    -- The first m entries of a seeded permutation, sorted back into file order.
    local perm = require("machrt.data.folds").permutation(n, seed or 0)
    local chosen = table.move(perm, 1, m, 1, {})
    table.sort(chosen)
    return self:take(chosen)
end

function DataFrame:_all()
    local all = {}
    for i = 1, #self.rows do all[i] = i end
    return all
end

--- Adds (or replaces) column `name` with a list of one value per row.
function DataFrame:add_column(name, values)
    if type(name) ~= "string" then fail("DataFrame:add_column: the name must be a string") end
    if type(values) ~= "table" then fail("DataFrame:add_column: values must be a list") end
    local n = #self.rows
    if #values ~= n then
        fail("DataFrame:add_column: '%s' has %d values, %s has %d rows", name, #values, self.source, n)
    end
    for i = 1, n do
        if not is_cell(values[i]) then
            fail("DataFrame:add_column: '%s' row %d: expected a string or number, got %s",
                name, i, type(values[i]))
        end
    end
    local j = self._index[name]
    if not j then
        j = #self.columns + 1
        self.columns[j] = name
        self._index[name] = j
    end
    for i = 1, n do self.rows[i][j] = values[i] end
    return self
end

--- The values of column `name` as Lua numbers; a cell that is not a number is
--- an error naming the column, the row and the value.
function DataFrame:numbers(name)
    local j = self:_col(name)
    local out = {}
    for i, row in ipairs(self.rows) do
        local v = row[j]
        local x = tonumber(v)
        if x == nil then
            data_error("column '%s' in %s, row %d: '%s' is not a number", name, self.source, i,
                tostring(v))
        end
        out[i] = x
    end
    return out
end

--- Column `name` as a float32 tensor of shape {nrows}.
function DataFrame:to_tensor(name)
    local mt = require "machrt"
    local values = self:numbers(name)
    if #values == 0 then return mt.zeros { 0 } end
    return mt.tensor(values)
end

function DataFrame:__tostring()
    return string.format("DataFrame(%d rows x %d columns: %s) from %s", #self.rows,
        #self.columns, table.concat(self.columns, ", "), self.source)
end

return DataFrame
