-- machrt.data.folds: k-fold, group k-fold, fold assignment from the dataset
-- config section, and train/validation splits (REFERENCE.md: 960 rows,
-- validation_size 0.2, fold 4 -> 768 / 192).

local folds = require "machrt.data.folds"
local DataFrame = require "machrt.data.frame"
local csv = require "machrt.data.csv"
local A = require "assert"

local T = {}
local function test(name, fn) T[#T + 1] = { name, fn } end

local function counts(ids)
    local c = {}
    for _, f in ipairs(ids) do c[f + 1] = (c[f + 1] or 0) + 1 end
    return c
end

-- The reference train dataframe's shape: pandas' index column written
-- with an empty header cell, then audio and label.
local function reference_df(n)
    local lines = { ",audio,label" }
    local types = { "fan", "pump", "slider", "valve" }
    for i = 0, n - 1 do
        local t = types[i % 4 + 1]
        lines[#lines + 1] = string.format("%d,%s/id_00/normal/%08d.wav,%s", i, t, i, t)
    end
    return csv.parse(table.concat(lines, "\n") .. "\n", { name = "audio_dataset_all_1.csv" })
end

local REF_CFG = { group_fold_column = "Unnamed: 0", validation_size = 0.2,
                                    validation_strategy = "kfold" }

test("reference setup: 5 folds, fold 4 is 768 train / 192 validation", function()
    local df = reference_df(960)
    local ids, k = folds.assign(df, REF_CFG)
    A.eq(k, 5)
    A.eq(#ids, 960)
    A.eq(counts(ids), { 192, 192, 192, 192, 192 })
    local train, val = folds.split(df, ids, "4")      -- the config gives folds: ['4']
    A.eq(train:nrows(), 768)
    A.eq(val:nrows(), 192)
    -- every row is its own group: rows are dealt out 0, 1, 2, 3, 4, 0, ...
    A.eq(val:get(1, "Unnamed: 0"), "4")
    A.eq(val:get(2, "Unnamed: 0"), "9")
    local t2, v2 = folds.split(df, ids, 4)
    A.eq(v2:column("audio"), val:column("audio"))
    A.eq(t2:nrows() + v2:nrows(), 960)
end)

test("split: an absent fold names the folds present", function()
    local df = reference_df(20)
    local ids = folds.assign(df, REF_CFG)
    A.raises(function() local a, b = folds.split(df, ids, 7) return a, b end,
        "fold 7 does not exist; folds present: 0, 1, 2, 3, 4")
    A.raises(function() local a, b = folds.split(df, ids, "x") return a, b end, "fold x does not exist")
    A.raises(function() local a, b = folds.split(df, { 0, 1 }, 0) return a, b end,
        "one fold id per row (20)")
end)

test("a fold column is used as given", function()
    local df = csv.parse("file,fold\na,2\nb,0\nc,2\nd,1.0\n", { name = "f.csv" })
    local ids, k = folds.assign(df, REF_CFG)
    A.eq(ids, { 2, 0, 2, 1 })
    A.eq(k, 3)
    local train, val = folds.split(df, ids, 2)
    A.eq(val:column("file"), { "a", "c" })
    A.eq(train:column("file"), { "b", "d" })
    local bad = csv.parse("file,fold\na,0\nb,one\n", { name = "f.csv" })
    A.raises(function() local x = folds.assign(bad, REF_CFG) return x end,
        "column 'fold' in f.csv, row 2: 'one' is not an integer")
    local frac = csv.parse("file,fold\na,0.5\n", { name = "f.csv" })
    A.raises(function() local x = folds.assign(frac, REF_CFG) return x end, "row 1", "'0.5'")
end)

test("group k-fold keeps groups whole", function()
    local rows, g = {}, { "a", "b", "b", "c", "c", "c", "d", "d", "d", "d", "e", "f", "f" }
    for i, x in ipairs(g) do rows[i] = { x, tostring(i) } end
    local df = DataFrame.new({ "machine", "id" }, rows, "g.csv")
    local ids, k = folds.assign(df, { group_fold_column = "machine", validation_size = 1 / 3 })
    A.eq(k, 3)
    local fold_of = {}
    for i, x in ipairs(g) do
        if fold_of[x] == nil then fold_of[x] = ids[i] end
        A.eq(ids[i], fold_of[x], "group " .. x .. " in one fold")
    end
    for f = 0, 2 do
        local train, val = folds.split(df, ids, f)
        local in_val = {}
        for _, x in ipairs(val:column("machine")) do in_val[x] = true end
        for _, x in ipairs(train:column("machine")) do
            A.eq(in_val[x], nil, "group " .. x .. " on both sides of fold " .. f)
        end
    end
end)

test("group_kfold: largest group first, lightest fold, ties by first appearance", function()
    -- sizes w4 z3 y2 x1, k = 3: w->0, z->1, y->2, x->2 (scikit-learn's GroupKFold
    -- gives the same: [2, 2, 2, 1, 1, 1, 0, 0, 0, 0])
    A.eq(folds.group_kfold({ "x", "y", "y", "z", "z", "z", "w", "w", "w", "w" }, 3),
        { 2, 2, 2, 1, 1, 1, 0, 0, 0, 0 })
    -- equal sizes: first appearance decides, each to the lightest (lowest id) fold
    A.eq(folds.group_kfold({ "q", "p", "q", "r", "p", "r" }, 2), { 0, 1, 0, 0, 1, 0 })
    -- groups may be numbers too
    A.eq(folds.group_kfold({ 5, 5, 7, 9 }, 2), { 0, 0, 1, 1 })
    A.raises(function() local x = folds.group_kfold({ "a", "a", "b" }, 3) return x end,
        "2 distinct groups", "k = 3")
    A.raises(function() local x = folds.group_kfold({ "a", "b" }, 1) return x end, "k must be")
end)

test("assign: no group column means one group per row", function()
    local df = reference_df(10)
    for _, col in ipairs { "", false } do
        local cfg = { group_fold_column = col or nil, validation_size = 0.5 }
        local ids, k = folds.assign(df, cfg)
        A.eq(k, 2)
        A.eq(ids, { 0, 1, 0, 1, 0, 1, 0, 1, 0, 1 })
    end
end)

test("assign: config errors name the key", function()
    local df = reference_df(10)
    A.raises(function() local x = folds.assign(df, { validation_size = 0.9 }) return x end,
        "dataset.validation_size", "k = 1")
    A.raises(function() local x = folds.assign(df, { validation_size = 0 }) return x end,
        "dataset.validation_size must be a number in (0, 1)")
    A.raises(function() local x = folds.assign(df, {}) return x end, "dataset.validation_size")
    A.raises(function()
        local x = folds.assign(df, { validation_size = 0.2, group_fold_column = "machine_id" })
        return x
    end, "dataset.group_fold_column: column 'machine_id' not found in audio_dataset_all_1.csv",
        "columns present: Unnamed: 0, audio, label")
    A.raises(function()
        local x = folds.assign(df, { validation_size = 0.2, validation_strategy = "custom" })
        return x
    end, "dataset.validation_strategy 'custom'")
    A.raises(function() local x = folds.assign(reference_df(3), { validation_size = 0.2 }) return x end,
        "3 rows", "k = 5")
    A.eq(select(2, folds.assign(df, { validation_size = "0.25" })), 4, "a string size from the CLI")
end)

test("kfold: seeded, balanced, different seeds differ", function()
    local a = folds.kfold(103, 5, 42)
    A.eq(#a, 103)
    A.eq(folds.kfold(103, 5, 42), a)
    local c = counts(a)
    for f = 1, 5 do A.truthy(c[f] == 20 or c[f] == 21, "fold size " .. c[f]) end
    A.truthy(table.concat(folds.kfold(103, 5, 43), ",") ~= table.concat(a, ","), "seed matters")
    -- the generator is part of reproducibility: a split must not change across releases
    A.eq(folds.kfold(10, 3, 1), { 1, 2, 0, 2, 2, 1, 0, 1, 0, 0 })
    A.raises(function() local x = folds.kfold(3, 5, 1) return x end, "n must be an integer >= k")
    A.raises(function() local x = folds.kfold(10, 1, 1) return x end, "k must be")
    A.raises(function() local x = folds.kfold(10, 2, "s") return x end, "seed must be an integer")
end)

test("permutation: a permutation of 1..n", function()
    local p = folds.permutation(50, 9)
    local seen = {}
    for _, i in ipairs(p) do
        A.truthy(i >= 1 and i <= 50 and not seen[i], "entry " .. i)
        seen[i] = true
    end
    A.eq(#p, 50)
    A.eq(folds.permutation(0, 1), {})
    A.eq(folds.permutation(1, -5), { 1 })
end)

return T
