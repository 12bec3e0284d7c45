-- machrt.data.csv: RFC 4180 reading and writing. Expectations are literal
-- tables for small inputs (fixtures under tests/fixtures/csv/).

local csv = require "machrt.data.csv"
local DataFrame = require "machrt.data.frame"
local A = require "assert"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

local FIX = "tests/fixtures/csv/"

-- Every row of a frame as a list of lists, for comparing with literals.
local function rows_of(df)
    local out = {}
    for i = 1, df:nrows() do
        local r = {}
        for j, name in ipairs(df.columns) do r[j] = df:get(i, name) end
        out[i] = r
    end
    return out
end

local function tmpname()
    local p = os.tmpname()
    os.remove(p)
    return p .. ".csv"
end

test("fixture: BOM, CRLF, empty header cell, quoted comma, doubled quote, quoted newline", function()
    local df = csv.read(FIX .. "rfc4180.csv")
    A.eq(df.columns, { "Unnamed: 0", "audio", "label" })
    A.eq(df.source, FIX .. "rfc4180.csv")
    A.eq(rows_of(df), {
        { "0", "fan/id_00/normal/00000000.wav", "fan" },
        { "1", "pump/id_00/a,b.wav", "pump" },
        { "2", 'valve "v2".wav', "multi\r\nline" },
    })
end)

test("LF, no final newline, trailing blank lines ignored", function()
    A.eq(rows_of(csv.read(FIX .. "no_final_newline.csv")), { { "a.wav", "fan" }, { "b.wav", "pump" } })
    local df = csv.parse("a,b\n1,2\n\n\n")
    A.eq(rows_of(df), { { "1", "2" } })
    df = csv.parse("a,b\r\n1,2\r\n\r\n")
    A.eq(rows_of(df), { { "1", "2" } })
end)

test("empty fields, quoted empty field, trailing comma", function()
    local df = csv.parse('a,b,c\n,,\n"",x,\n1,"",3')
    A.eq(rows_of(df), { { "", "", "" }, { "", "x", "" }, { "1", "", "3" } })
    -- a single column: "" is a value, an empty line is not
    df = csv.parse('a\n""\n\nz\n')
    A.eq(rows_of(df), { { "" }, { "z" } })
end)

test("empty header cells are named Unnamed: <0-based index>", function()
    local df = csv.parse(",x,,y\n1,2,3,4\n")
    A.eq(df.columns, { "Unnamed: 0", "x", "Unnamed: 2", "y" })
end)

test("values stay strings", function()
    local df = csv.parse("n,f\n007,1.50\n")
    A.eq(df:get(1, "n"), "007")
    A.eq(df:get(1, "f"), "1.50")
    A.eq(math.type(df:numbers("n")[1]), "integer")
end)

test("header only gives zero rows", function()
    local df = csv.parse("a,b\n")
    A.eq(df.columns, { "a", "b" })
    A.eq(df:nrows(), 0)
end)

test("ragged row: error names file, line and counts", function()
    A.raises(function() local d = csv.read(FIX .. "ragged.csv") return d end,
        FIX .. "ragged.csv", "line 3", "3 fields", "header has 2")
    -- the line is the physical line where the record starts, after a quoted newline
    A.raises(function() local d = csv.parse('a,b\n"x\ny",1\n2\n', { name = "t.csv" }) return d end,
        "t.csv", "line 4", "1 fields")
    A.raises(function() local d = csv.parse('a,b\n"x\ny",1\n2,3,4\n', { name = "t.csv" }) return d end,
        "line 4", "3 fields")
end)

test("unterminated quote: error names file and line", function()
    A.raises(function() local d = csv.read(FIX .. "unterminated.csv") return d end,
        FIX .. "unterminated.csv", "unterminated", "line 3")
end)

test("garbage after a closing quote is an error", function()
    A.raises(function() local d = csv.parse('a,b\n"x"y,1\n', { name = "t.csv" }) return d end,
        "t.csv", "line 2", "after a closing quote")
end)

test("duplicate header names: error names them", function()
    A.raises(function() local d = csv.read(FIX .. "duplicate.csv") return d end,
        FIX .. "duplicate.csv", "duplicate", "file")
    -- an empty cell's name can clash with a real one
    A.raises(function() local d = csv.parse("Unnamed: 1,\n1,2\n") return d end,
        "duplicate", "Unnamed: 1")
    -- two empty cells get different Unnamed names, so they are not duplicates
    A.eq(csv.parse(",\n1,2\n").columns, { "Unnamed: 0", "Unnamed: 1" })
end)

test("missing file: error names the path", function()
    A.raises(function() local d = csv.read("tests/fixtures/csv/no_such_file.csv") return d end,
        "tests/fixtures/csv/no_such_file.csv")
end)

test("empty text is an error", function()
    A.raises(function() local d = csv.parse("", { name = "e.csv" }) return d end, "e.csv", "empty")
    A.raises(function() local d = csv.parse("\239\187\191\n\n", { name = "e.csv" }) return d end, "empty")
end)

test("write quotes only when needed and reads back", function()
    local df = DataFrame.new({ "file", "label", "note" }, {
        { "a.wav", "fan", "plain" },
        { "b,c.wav", 'say "hi"', "two\nlines" },
        { "", "x", " spaced " },
    })
    df:add_column("p", { 0.1, 1, 2.5e-7 })
    local path = tmpname()
    csv.write(path, df)
    local f = assert(io.open(path, "rb"))
    local text = f:read("a")
    f:close()
    A.eq(text, 'file,label,note,p\na.wav,fan,plain,0.1\n"b,c.wav","say ""hi""","two\nlines",1\n' ..
        ',x, spaced ,2.5e-07\n')
    local folder, base = path:match("^(.*)/([^/]*)$")
    for _, name in ipairs(require("machrt.sys").list_folder(folder)) do
        A.truthy(name:sub(1, #base + 5) ~= base .. ".tmp.", "the temporary file is renamed away: " .. name)
    end
    local back = csv.read(path)
    os.remove(path)
    A.eq(back.columns, df.columns)
    A.eq(rows_of(back), {
        { "a.wav", "fan", "plain", "0.1" },
        { "b,c.wav", 'say "hi"', "two\nlines", "1" },
        { "", "x", " spaced ", "2.5e-07" },
    })
end)

test("write: a one-column empty value survives the round trip", function()
    local df = DataFrame.new({ "a" }, { { "" }, { "z" } })
    local path = tmpname()
    csv.write(path, df)
    local back = csv.read(path)
    os.remove(path)
    A.eq(rows_of(back), { { "" }, { "z" } })
end)

test("write: a first column name starting with a byte-order mark survives the round trip", function()
    -- Found by the CSV fuzz target: "\n<BOM>\n." reads as one column named
    -- <BOM> (the mark is not at the start), which read back as "Unnamed: 0".
    local bom = "\239\187\191"
    local df = csv.parse("\n" .. bom .. "x,y\n.,2\n", { name = "bom.csv" })
    A.eq(df.columns, { bom .. "x", "y" })
    local back = csv.parse(csv.format(df), { name = "again.csv" })
    A.eq(back.columns, { bom .. "x", "y" })
    A.eq(rows_of(back), { { ".", "2" } })
    -- Only the text's first field needs it.
    A.eq(csv.format(DataFrame.new({ "a", bom }, { { bom, "1" } })), "a," .. bom .. "\n" .. bom .. ",1\n")
end)

test("write to a missing directory: error names the path", function()
    local df = DataFrame.new({ "a" }, { { "1" } })
    A.raises(function() csv.write("/nonexistent_dir_machrt/x.csv", df) end,
        "/nonexistent_dir_machrt/x.csv")
end)

test("10 000 rows x 6 columns read well under 0.5 s", function()
    local lines = { "Unnamed: 0,audio,label,fold,group,weight" }
    for i = 1, 10000 do
        lines[#lines + 1] = string.format('%d,fan/id_%02d/normal/%08d.wav,%s,%d,"g,%d",%.3f',
            i - 1, i % 7, i, (i % 2 == 0) and "fan" or "pump", i % 5, i % 13, i / 7)
    end
    local text = table.concat(lines, "\r\n") .. "\r\n"
    local t0 = os.clock()
    local df = csv.parse(text)
    local dt = os.clock() - t0
    A.eq(df:nrows(), 10000)
    A.eq(df:get(10000, "group"), "g,3")
    A.truthy(dt < 0.5, string.format("parse took %.3f s", dt))
end)

return T
