-- machrt.data.csv: RFC 4180 CSV files to and from DataFrames.
--
-- Reading follows RFC 4180 plus what real files need: LF or CRLF line ends,
-- a UTF-8 byte-order mark, an optional final newline, blank lines skipped
-- (as pandas does), and pandas' "Unnamed: <i>" name for an empty header cell
-- (experiment configs name such columns, e.g. group_fold_column 'Unnamed: 0').
-- Every cell stays a string; DataFrame:numbers() converts where a number is
-- meant, so that a column such as a file name is never mangled.
local sys = require "machrt.sys"
local DataFrame = require "machrt.data.frame"

local M = {}

local BOM = "\239\187\191" -- the UTF-8 byte-order mark

--- The name an empty first header cell reads as: the index column that
--- pandas' DataFrame.to_csv writes (MIMII-style CSVs have one).
M.INDEX_COLUMN = "Unnamed: 0"

-- Errors name the source and line themselves, so they are raised at level 0:
-- a position inside this module would only distract.
local function fail(fmt, ...)
    error(string.format(fmt, ...), 0)
end

-- Number of "\n" in s (quoted fields may span lines).
local function count_newlines(s)
    local n = 0
    local p = s:find("\n", 1, true)
    while p do
        n = n + 1
        p = s:find("\n", p + 1, true)
    end
    return n
end

-- Splits `text` into records. Returns a list of records (lists of strings)
-- and a parallel list with the physical line (1-based) where each starts.
-- Scans with string.find from delimiter to delimiter, so the cost is per
-- field, not per character.
local function records(text, name)
    local out, lines = {}, {}
    local len = #text
    local pos, line = 1, 1
    if text:sub(1, 3) == BOM then pos = 4 end
    while pos <= len do
        local start_line = line
        local rec, nf = {}, 0
        local quoted_any = false
        -- One record: fields until an unquoted line end or the end of the text.
        while true do
            local field
            local stop                            -- position of the delimiter after the field
            if text:byte(pos) == 34 then          -- '"': quoted field
                quoted_any = true
                local q = pos + 1
                local doubled = false
                while true do
                    local close = text:find('"', q, true)
                    if not close then
                        fail("%s: unterminated quoted field starting on line %d", name, line)
                    end
                    if text:byte(close + 1) == 34 then   -- "" is an escaped quote
                        doubled = true
                        q = close + 2
                    else
                        field = text:sub(pos + 1, close - 1)
                        stop = close + 1
                        break
                    end
                end
                if doubled then field = field:gsub('""', '"') end
                line = line + count_newlines(field)
                local c = text:byte(stop)
                if c == 13 and text:byte(stop + 1) == 10 then
                    stop = stop + 1
                    c = 10
                end
                if c ~= nil and c ~= 44 and c ~= 10 then
                    fail("%s: line %d: unexpected character %q after a closing quote", name, line,
                        text:sub(stop, stop))
                end
            else
                stop = text:find("[,\n]", pos)
                if stop then
                    field = text:sub(pos, stop - 1)
                else
                    field = text:sub(pos)
                end
                -- (A quote inside an unquoted field is kept as it is, as pandas does.)
                -- CRLF: the CR belongs to the line end, not to the last field.
                if (stop == nil or text:byte(stop) == 10) and field:byte(-1) == 13 then
                    field = field:sub(1, -2)
                end
            end
            nf = nf + 1
            rec[nf] = field
            if stop == nil or stop > len then
                pos = len + 1
                break
            end
            local c = text:byte(stop)
            pos = stop + 1
            if c == 10 then
                line = line + 1
                break
            end
            -- a comma at the very end of the text still opens one (empty) field
            if pos > len then
                rec[nf + 1] = ""
                break
            end
        end
        -- A blank line is one empty, unquoted field: skip it as pandas does.
        if not (nf == 1 and rec[1] == "" and not quoted_any) then
            out[#out + 1] = rec
            lines[#lines + 1] = start_line
        end
    end
    return out, lines
end

--- Parses CSV text into a DataFrame (opts.name names the source in errors).
function M.parse(text, opts)
    opts = opts or {}
    local name = opts.name or "<csv text>"
    if type(text) ~= "string" then
        fail("csv.parse: expected the CSV text as a string, got %s", type(text))
    end
    local recs, lines = records(text, name)
    if #recs == 0 then fail("%s: empty CSV (no header line)", name) end
    local header = recs[1]
    local seen, dups = {}, {}
    for i, h in ipairs(header) do
        if h == "" then
            h = "Unnamed: " .. (i - 1)             -- pandas' name, 0-based index
            header[i] = h
        end
        if seen[h] and not dups[h] then dups[#dups + 1] = h; dups[h] = true end
        seen[h] = true
    end
    if #dups > 0 then
        fail("%s: duplicate column names in the header: %s", name, table.concat(dups, ", "))
    end
    local ncol = #header
    local rows = {}
    for r = 2, #recs do
        local rec = recs[r]
        if #rec ~= ncol then
            fail("%s: line %d: record has %d fields, the header has %d", name, lines[r], #rec, ncol)
        end
        rows[r - 1] = rec
    end
    return DataFrame.new(header, rows, name)
end

--- Reads a CSV file into a DataFrame whose source is the path.
function M.read(path, opts)
    if type(path) ~= "string" then fail("read_csv: expected a path string, got %s", type(path)) end
    local f, err = io.open(path, "rb")
    if not f then
        -- io.open's message starts with the path already; keep only the reason.
        local reason = tostring(err)
        if reason:sub(1, #path + 2) == path .. ": " then reason = reason:sub(#path + 3) end
        fail("read_csv: cannot open '%s': %s", path, reason)
    end
    local text = f:read("a")
    f:close()
    local o = { name = path }
    if opts then for k, v in pairs(opts) do o[k] = v end end
    return M.parse(text, o)
end

-- The shortest decimal form that reads back to the same number.
local function number_string(v)
    if math.type(v) == "integer" then return string.format("%d", v) end
    for _, f in ipairs { "%.15g", "%.16g", "%.17g" } do
        local s = string.format(f, v)
        if tonumber(s) == v then return s end
    end
    return string.format("%.17g", v)
end

local function cell_string(v)
    local t = type(v)
    if t == "string" then return v end
    if t == "number" then return number_string(v) end
    if t == "boolean" then return tostring(v) end
    return nil
end

-- Quotes a field only when RFC 4180 needs it, or when it is the first field
-- of the text and starts with a UTF-8 byte-order mark, which reading would
-- take for the file's own and drop.
local function quote(s, first)
    if s:find('[,"\r\n]') or (first and s:sub(1, 3) == BOM) then
        return '"' .. s:gsub('"', '""') .. '"'
    end
    return s
end

--- Formats a DataFrame as CSV text (LF line ends, quoting only where needed).
function M.format(df)
    local cols = df.columns
    local ncol = #cols
    local lines = {}
    local function add(values)
        local parts = {}
        for j = 1, ncol do parts[j] = quote(values[j], #lines == 0 and j == 1) end
        local l = table.concat(parts, ",")
        -- A lone empty field would read back as a blank line, which is skipped.
        if ncol == 1 and l == "" then l = '""' end
        lines[#lines + 1] = l
    end
    add(cols)
    for i = 1, df:nrows() do
        local vals = {}
        for j = 1, ncol do
            local v = df:get(i, cols[j])
            local s = cell_string(v)
            if s == nil then
                fail("write_csv: row %d, column '%s': cannot write a %s", i, cols[j], type(v))
            end
            vals[j] = s
        end
        add(vals)
    end
    lines[#lines + 1] = ""
    return table.concat(lines, "\n")
end

--- Writes a DataFrame to `path` atomically (a temporary name, then rename),
--- so a reader never sees a half-written file.
function M.write(path, df)
    if type(path) ~= "string" then fail("write_csv: expected a path string, got %s", type(path)) end
    local ok, err = pcall(sys.write_file, path, M.format(df))
    if not ok then fail("write_csv: %s", tostring(err)) end
end

-- One cell: integers as they are, other numbers with `digits` significant
-- digits (default: the shortest form that reads back exactly), NaN as
-- "nan", nil as empty, text quoted where RFC 4180 needs it.
local function cell_text(v, digits)
    if v == nil then return "" end
    if type(v) == "number" then
        if v ~= v then return "nan" end
        if math.type(v) == "integer" or not digits then return number_string(v) end
        return string.format("%." .. digits .. "g", v)
    end
    return quote(tostring(v))
end

--- One CSV line (no line end) from a list of values (see cell_text).
function M.row_text(values, n, opts)
    local digits = opts and opts.digits
    local parts = {}
    for j = 1, n or #values do parts[j] = cell_text(values[j], digits) end
    return table.concat(parts, ",")
end

--- Each row's id in the CSV's own index: the values of its index column
--- (INDEX_COLUMN, first), unchanged, or pandas' default index (0-based
--- positions, as text) when it has none. A table of results that carries
--- them in its first column joins back onto the CSV.
function M.index_ids(df)
    local index = df.columns[1] == M.INDEX_COLUMN and df:column(M.INDEX_COLUMN)
    local ids = {}
    for i = 1, df:nrows() do ids[i] = index and index[i] or tostring(i - 1) end
    return ids
end

--- CSV text of a table given as a header (list of names) and rows (lists in
--- header order, or tables keyed by the names); opts.digits as row_text.
function M.table_text(header, rows, opts)
    local lines = { M.row_text(header, #header) }
    for _, r in ipairs(rows) do
        local values = {}
        for j, name in ipairs(header) do
            local v = r[j]
            if v == nil then v = r[name] end
            values[j] = v
        end
        lines[#lines + 1] = M.row_text(values, #header, opts)
    end
    lines[#lines + 1] = ""
    return table.concat(lines, "\n")
end

return M
