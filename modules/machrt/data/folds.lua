-- machrt.data.folds: cross-validation fold assignment and train/validation
-- splits for the `dataset` config section (validation_strategy: kfold).
--
-- Fold ids are 0-based, as in the experiment configs (`folds: ['4']`).
-- Shuffles use a seeded splitmix64 generator of their own, so a split
-- depends only on its seed: not on the Lua version's math.random, nor on
-- anything else that drew random numbers before.
local M = {}

-- A bad argument, reported at the line that called the public function
-- (fail_helper: from a helper one frame further down).
local function fail(fmt, ...)
    error(string.format(fmt, ...), 3)
end

local function fail_helper(fmt, ...)
    error(string.format(fmt, ...), 4)
end

-- Data errors name the source, row and column themselves.
local function data_error(fmt, ...)
    error(string.format(fmt, ...), 0)
end

-- splitmix64 (Steele, Lea, Flood 2014): Lua 5.4 integers wrap on overflow
-- and >> is a logical shift, which is exactly the arithmetic it needs.
local function generator(seed)
    local state = seed
    return function()
        state = state + 0x9E3779B97F4A7C15
        local z = state
        z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ~ (z >> 27)) * 0x94D049BB133111EB
        return z ~ (z >> 31)
    end
end

local function check_seed(seed, who)
    if seed == nil then return 0 end
    local s = math.tointeger(seed)
    if not s then fail_helper("%s: seed must be an integer, got %s", who, tostring(seed)) end
    return s
end

--- A seeded random permutation of 1..n (a list of n indices).
function M.permutation(n, seed)
    if math.type(n) ~= "integer" or n < 0 then
        fail("permutation: n must be a non-negative integer, got %s", tostring(n))
    end
    local rand = generator(check_seed(seed, "permutation"))
    local p = {}
    for i = 1, n do p[i] = i end
    -- Fisher-Yates; the modulo bias of a 63-bit draw is negligible here.
    for i = n, 2, -1 do
        local j = (rand() >> 1) % i + 1
        p[i], p[j] = p[j], p[i]
    end
    return p
end

local function check_k(k, who)
    if math.type(k) ~= "integer" or k < 2 then
        fail_helper("%s: k must be an integer >= 2, got %s", who, tostring(k))
    end
end

--- Seeded k-fold: a list of n 0-based fold ids, each fold floor(n/k) or
--- ceil(n/k) rows.
function M.kfold(n, k, seed)
    check_k(k, "kfold")
    if math.type(n) ~= "integer" or n < k then
        fail("kfold: n must be an integer >= k = %d, got %s", k, tostring(n))
    end
    local perm = M.permutation(n, check_seed(seed, "kfold"))
    local folds = {}
    for pos, row in ipairs(perm) do folds[row] = (pos - 1) % k end
    return folds
end

--- Group k-fold as scikit-learn's GroupKFold does it: no shuffling; groups
--- taken by size (largest first, ties by first appearance) and each put in
--- the fold with the fewest rows so far (the lowest id on ties). Returns a
--- list of 0-based fold ids, one per entry of `groups`.
function M.group_kfold(groups, k)
    check_k(k, "group_kfold")
    if type(groups) ~= "table" then fail("group_kfold: groups must be a list") end
    local size, order = {}, {}
    for _, g in ipairs(groups) do
        if size[g] == nil then
            order[#order + 1] = g
            size[g] = 0
        end
        size[g] = size[g] + 1
    end
    if #order < k then
        data_error("group_kfold: %d distinct groups, fewer than the k = %d folds", #order, k)
    end
    local first = {}
    for pos, g in ipairs(order) do first[g] = pos end
    table.sort(order, function(a, b)
        if size[a] ~= size[b] then return size[a] > size[b] end
        return first[a] < first[b]
    end)
    local load, fold_of = {}, {}
    for f = 0, k - 1 do load[f] = 0 end
    for _, g in ipairs(order) do
        local best = 0
        for f = 1, k - 1 do
            if load[f] < load[best] then best = f end
        end
        fold_of[g] = best
        load[best] = load[best] + size[g]
    end
    local folds = {}
    for i, g in ipairs(groups) do folds[i] = fold_of[g] end
    return folds
end

-- The integer in a "fold" cell ("3", "3.0"), or nil.
local function fold_value(v)
    local x = tonumber(v)
    return x and math.tointeger(x)
end

--- Fold ids for a dataframe from the `dataset` config section: a "fold"
--- column is used as given; otherwise k = round(1 / validation_size) and
--- group k-fold over `group_fold_column` (each row its own group when that
--- is empty). Returns the list of 0-based fold ids and k.
function M.assign(df, cfg)
    cfg = cfg or {}
    if df:has_column("fold") then
        local folds, seen, k = {}, {}, 0
        for i, v in ipairs(df:column("fold")) do
            local f = fold_value(v)
            if not f then
                data_error("column 'fold' in %s, row %d: '%s' is not an integer fold id",
                    df.source, i, tostring(v))
            end
            folds[i] = f
            if not seen[f] then seen[f] = true; k = k + 1 end
        end
        return folds, k
    end
    local strategy = cfg.validation_strategy
    if strategy ~= nil and strategy ~= "kfold" then
        data_error("dataset.validation_strategy '%s' cannot assign folds (only 'kfold' can)",
            tostring(strategy))
    end
    local vs = tonumber(cfg.validation_size)
    if not vs or not (vs > 0 and vs < 1) then
        data_error("dataset.validation_size must be a number in (0, 1), got %s",
            tostring(cfg.validation_size))
    end
    local k = math.floor(1 / vs + 0.5)
    if k < 2 then
        data_error("dataset.validation_size = %s gives k = %d folds; k-fold needs at least 2",
            tostring(cfg.validation_size), k)
    end
    local col = cfg.group_fold_column
    local groups
    if col == nil or col == "" then
        groups = {}
        for i = 1, df:nrows() do groups[i] = i end
    else
        df:require_columns({ col }, "dataset.group_fold_column")
        groups = df:column(col)
    end
    if #groups < k then
        data_error("%s has %d rows, fewer than the k = %d folds of dataset.validation_size = %s",
            df.source, #groups, k, tostring(cfg.validation_size))
    end
    return M.group_kfold(groups, k), k
end

--- Splits a dataframe by fold ids: the rows of `fold` are the validation
--- frame, all others the training frame. Returns train_df, val_df.
function M.split(df, fold_ids, fold)
    if type(fold_ids) ~= "table" or #fold_ids ~= df:nrows() then
        fail("split: expected one fold id per row (%d), got %s", df:nrows(),
            type(fold_ids) == "table" and tostring(#fold_ids) or type(fold_ids))
    end
    local f = fold_value(fold)          -- configs give folds as strings: ['4']
    local present, list = {}, {}
    for _, id in ipairs(fold_ids) do
        if not present[id] then present[id] = true; list[#list + 1] = id end
    end
    if f == nil or not present[f] then
        table.sort(list)
        local names = {}
        for i, id in ipairs(list) do names[i] = tostring(id) end
        data_error("fold %s does not exist; folds present: %s", tostring(fold),
            table.concat(names, ", "))
    end
    local train, val = {}, {}
    for i, id in ipairs(fold_ids) do
        if id == f then val[#val + 1] = i else train[#train + 1] = i end
    end
    return df:take(train), df:take(val)
end

return M
