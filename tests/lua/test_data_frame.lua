-- machrt.data.frame (DataFrame) and machrt.data.labels (label encoding).

local DataFrame = require "machrt.data.frame"
local labels = require "machrt.data.labels"
local csv = require "machrt.data.csv"
local A = require "assert"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

local function sample_df()
    return DataFrame.new({ "file", "label", "score" }, {
        { "a.wav", "pump", "0.5" },
        { "b.wav", "fan", "1" },
        { "c.wav", "valve", "-2.25" },
        { "d.wav", "fan", "3e2" },
    }, "clips.csv")
end

test("columns, nrows, has_column, get, row, column", function()
    local df = sample_df()
    A.eq(df.columns, { "file", "label", "score" })
    A.eq(df.source, "clips.csv")
    A.eq(df:nrows(), 4)
    A.truthy(df:has_column("label"))
    A.eq(df:has_column("fold"), false)
    A.eq(df:get(3, "file"), "c.wav")
    A.eq(df:row(2), { file = "b.wav", label = "fan", score = "1" })
    A.eq(df:column("label"), { "pump", "fan", "valve", "fan" })
    -- column() returns a copy
    df:column("label")[1] = "changed"
    A.eq(df:get(1, "label"), "pump")
end)

test("missing column: error names source and the columns present", function()
    local df = sample_df()
    A.raises(function() local c = df:column("fold") return c end,
        "column 'fold' not found in clips.csv; columns present: file, label, score")
    A.raises(function() local v = df:get(1, "nope") return v end, "column 'nope' not found")
    A.raises(function() df:require_columns({ "file", "audio" }, "dataset.audio_column") end,
        "dataset.audio_column: column 'audio' not found in clips.csv; columns present: file, label, score")
    A.raises(function() df:require_columns("x") end, "column 'x' not found")
    df:require_columns({ "file", "label" }, "ctx")
end)

test("new validates its input", function()
    A.raises(function() local d = DataFrame.new({ "a", "b" }, { { "1" } }) return d end,
        "row 1", "column 'b'")
    A.raises(function() local d = DataFrame.new({ "a", "a" }, {}) return d end, "duplicate", "'a'")
    A.raises(function() local d = DataFrame.new({ "a" }, { { "1", "2" } }) return d end,
        "row 1 has 2 values, expected 1")
    A.eq(DataFrame.new({ "a" }):nrows(), 0)
end)

test("filter and take make new frames with copied rows", function()
    local df = sample_df()
    local fans = df:filter(function(r, i) return r.label == "fan" end)
    A.eq(fans:column("file"), { "b.wav", "d.wav" })
    A.eq(fans.source, "clips.csv")
    local seen = {}
    df:filter(function(_, i) seen[#seen + 1] = i return false end)
    A.eq(seen, { 1, 2, 3, 4 })
    local t = df:take({ 4, 1, 4 })
    A.eq(t:column("file"), { "d.wav", "a.wav", "d.wav" })
    t:add_column("extra", { "x", "y", "z" })
    A.eq(df.columns, { "file", "label", "score" })
    A.eq(#df.rows[4], 3, "the parent's rows are untouched")
    A.raises(function() local x = df:take({ 1, 5 }) return x end, "index 2 is 5", "1..4")
    A.eq(df:take({}):nrows(), 0)
end)

test("sample: deterministic, original order, fraction checks", function()
    local rows = {}
    for i = 1, 100 do rows[i] = { tostring(i) } end
    local df = DataFrame.new({ "id" }, rows)
    local s1 = df:sample(0.3, 7)
    local s2 = df:sample(0.3, 7)
    A.eq(s1:nrows(), 30)
    A.eq(s1:column("id"), s2:column("id"))
    local ids = s1:numbers("id")
    for k = 2, #ids do A.truthy(ids[k - 1] < ids[k], "original order") end
    A.truthy(table.concat(df:sample(0.3, 8):column("id"), ",") ~= table.concat(s1:column("id"), ","),
        "another seed, another sample")
    A.eq(df:sample(1, 3):column("id"), df:column("id"))
    A.eq(df:sample(0.001, 1):nrows(), 1, "at least one row")
    A.raises(function() local x = df:sample(0, 1) return x end, "fraction must be in (0, 1]")
    A.raises(function() local x = df:sample(1.5, 1) return x end, "fraction")
    A.raises(function() local x = df:sample(0.5, 1.5) return x end, "seed must be an integer")
end)

test("add_column adds or replaces, checks the length", function()
    local df = sample_df()
    df:add_column("fold", { "0", "1", "0", "1" })
    A.eq(df.columns, { "file", "label", "score", "fold" })
    A.eq(df:row(2).fold, "1")
    df:add_column("fold", { "2", "2", "2", "2" })
    A.eq(#df.columns, 4)
    A.eq(df:column("fold"), { "2", "2", "2", "2" })
    A.raises(function() df:add_column("x", { "1" }) end, "'x' has 1 values", "4 rows")
end)

test("numbers and to_tensor", function()
    local df = sample_df()
    A.eq(df:numbers("score"), { 0.5, 1, -2.25, 300.0 })
    local t = df:to_tensor("score")
    A.tensor_near(t, { 0.5, 1, -2.25, 300 }, 0)
    A.raises(function() local x = df:numbers("label") return x end,
        "column 'label' in clips.csv, row 1: 'pump' is not a number")
    A.raises(function() local x = df:to_tensor("file") return x end, "row 1", "'a.wav'")
    A.shape_eq(DataFrame.new({ "a" }, {}):to_tensor("a"), { 0 })
end)

test("labels: one column, one-hot over sorted class names", function()
    local df = sample_df()
    local e = labels.encode(df, { "label" })
    A.eq(e.classes, { "fan", "pump", "valve" })
    A.eq(e.index, { 2, 1, 3, 1 })
    A.tensor_near(e.targets, { { 0, 1, 0 }, { 1, 0, 0 }, { 0, 0, 1 }, { 1, 0, 0 } }, 0)
    -- a name instead of a list
    A.eq(labels.encode(df, "label").index, { 2, 1, 3, 1 })
end)

test("labels: numeric classes sort as numbers", function()
    local df = DataFrame.new({ "y" }, { { "10" }, { "9" }, { "2" }, { "10" } })
    local e = labels.encode(df, { "y" })
    A.eq(e.classes, { "2", "9", "10" })
    A.eq(e.index, { 3, 2, 1, 3 })
end)

test("labels: fixed class list for a validation frame", function()
    local df = DataFrame.new({ "label" }, { { "pump" }, { "pump" } }, "val.csv")
    local e = labels.encode(df, { "label" }, { "fan", "pump", "valve" })
    A.eq(e.index, { 2, 2 })
    A.shape_eq(e.targets, { 2, 3 })
    A.raises(function() local x = labels.encode(df, { "label" }, { "fan" }) return x end,
        "row 1", "'pump' is not one of the classes: fan")
end)

test("labels: several columns are a multi-label task", function()
    local df = DataFrame.new({ "file", "fan", "pump", "valve" }, {
        { "a", "1", "0", "0" },
        { "b", "0", "0.3", "0.7" },
        { "c", "0", "1", "1" },
    })
    local e = labels.encode(df, { "fan", "pump", "valve" })
    A.eq(e.classes, { "fan", "pump", "valve" })
    A.tensor_near(e.targets, { { 1, 0, 0 }, { 0, 0.3, 0.7 }, { 0, 1, 1 } }, 1e-7)
    A.eq(e.index, { 1, 3, 2 })
    local bad = DataFrame.new({ "a", "b" }, { { "1", "x" } }, "m.csv")
    A.raises(function() local x = labels.encode(bad, { "a", "b" }) return x end,
        "label column 'b' in m.csv, row 1: 'x' is not a number")
end)

test("labels: errors for a missing column and empty cells", function()
    local df = sample_df()
    A.raises(function() local x = labels.encode(df, { "target" }) return x end,
        "column 'target' not found in clips.csv; columns present: file, label, score")
    local holes = csv.parse("file,label\na,fan\nb,\n", { name = "h.csv" })
    A.raises(function() local x = labels.encode(holes, { "label" }) return x end,
        "label column 'label' in h.csv, row 2: empty label")
    local header_only = csv.parse("file,label\n", { name = "e.csv" })
    A.raises(function() local x = labels.encode(header_only, { "label" }) return x end,
        "label column 'label' in e.csv: no rows, so no classes to encode")
    -- A validation frame with no rows encodes to no targets over the given classes.
    A.shape_eq(labels.encode(header_only, { "label" }, { "fan", "pump" }).targets, { 0, 2 })
    local mholes = csv.parse("a,b\n1,0\n,1\n", { name = "h.csv" })
    A.raises(function() local x = labels.encode(mholes, { "a", "b" }) return x end,
        "column 'a'", "row 2", "empty")
end)

test("labels: one_hot", function()
    A.tensor_near(labels.one_hot({ 2, 1 }, 3), { { 0, 1, 0 }, { 1, 0, 0 } }, 0)
    A.shape_eq(labels.one_hot({}, 4), { 0, 4 })
    A.raises(function() local x = labels.one_hot({ 4 }, 3) return x end, "index[1] = 4", "1..3")
    A.raises(function() local x = labels.one_hot({ 1 }, 0) return x end, "C must be")
end)

test("DataFrame prints a summary", function()
    A.eq(tostring(sample_df()), "DataFrame(4 rows x 3 columns: file, label, score) from clips.csv")
end)

return T
