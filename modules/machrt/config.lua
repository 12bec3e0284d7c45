-- Experiment configs: a table with the reference yaml's sections and keys,
-- command-line overrides `--section.key=value`, and checks.
--
--   local config = require "machrt.config"
--   local cfg, opts = config.from_args(defaults, arg)   -- opts.resume, opts.overwrite, opts.help
--   config.describe(cfg)                                -- "section.key = value" lines
--
--   config.validate(cfg, schema)                        -- every problem in one error
--   config.help(cfg, schema)                            -- describe + allowed values, meaning
--
-- A value's type is its default's: numbers, booleans (true/false/yes/no/1/0),
-- strings, and lists (comma-separated: --dataset.folds=0,1). An unknown
-- section or key is an error that lists the valid ones. The schema (see
-- machrt.schema) then says what each value may be.

local M = {}

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
end

local function fail(msg) error("config: " .. msg, 0) end

-- One error for all the problems found: the user fixes them in one go.
local function fail_all(problems)
    if #problems == 1 then fail(problems[1]) end
    if #problems > 1 then
        fail(string.format("%d settings are invalid:\n  %s", #problems, table.concat(problems, "\n  ")))
    end
end

local function copy(v)
    if type(v) ~= "table" then return v end
    local c = {}
    for k, x in pairs(v) do c[k] = copy(x) end
    return c
end
M.copy = copy

-- Parses text as the type of `default` (the list element type for lists).
local function parse_scalar(text, default, name)
    local kind = type(default)
    if kind == "number" then
        local v = tonumber(text)
        if v == nil then fail(string.format("%s expects a number, got '%s'", name, text)) end
        if math.type(default) == "integer" and math.type(v) == "float" and v == math.floor(v) then
            v = math.tointeger(v) or v -- 1e30 has no integer form: the schema says so by name
        end
        return v
    elseif kind == "boolean" then
        local l = text:lower()
        if l == "true" or l == "yes" or l == "1" then return true end
        if l == "false" or l == "no" or l == "0" then return false end
        fail(string.format("%s expects true or false, got '%s'", name, text))
    end
    return text
end

local function parse_value(text, default, name, list_kind)
    if type(default) == "table" then
        local items = {}
        if text ~= "" then
            for item in (text .. ","):gmatch("([^,]*),") do
                items[#items + 1] = parse_scalar(item:match("^%s*(.-)%s*$"), list_kind or "", name)
            end
        end
        return items
    end
    return parse_scalar(text, default, name)
end

-- A section is a non-empty table with keys (a list value is not one).
local function is_section(v) return type(v) == "table" and v[1] == nil and next(v) ~= nil end

-- The names of cfg's sections (want = true) or top-level keys (false).
local function names_where(cfg, want)
    local out = {}
    for _, k in ipairs(sorted_keys(cfg)) do
        if is_section(cfg[k]) == want then out[#out + 1] = k end
    end
    return table.concat(out, ", ")
end

--- Sets "section.key" (or a top-level "key") from text, typed by the default.
function M.set(cfg, path, text, list_kinds)
    local section, key = path:match("^([%w_]+)%.([%w_]+)$")
    if not section then
        key = path:match("^([%w_]+)$")
        if not key then fail(string.format("'%s' is not section.key", path)) end
        if cfg[key] == nil or is_section(cfg[key]) then
            fail(string.format("unknown key '%s'; top-level keys: %s; sections: %s", path,
                               names_where(cfg, false), names_where(cfg, true)))
        end
        cfg[key] = parse_value(text, cfg[key], path, list_kinds and list_kinds[path])
        return
    end
    local sec = cfg[section]
    if not is_section(sec) then
        fail(string.format("unknown section '%s' in '%s'; sections: %s", section, path,
                           names_where(cfg, true)))
    end
    if sec[key] == nil then
        fail(string.format("unknown key '%s' in section '%s'; valid keys: %s", key, section,
                           table.concat(sorted_keys(sec), ", ")))
    end
    sec[key] = parse_value(text, sec[key], path, list_kinds and list_kinds[path])
end

--- Parses the command line: overrides applied to a copy of `defaults`.
--- Returns cfg and opts {resume = folder|nil, overwrite = bool, help = bool,
--- overrides = {...}}. (--traceback is the host's: runtime/main.c takes it
--- out of `arg`.)
function M.from_args(defaults, args, list_kinds)
    local cfg = copy(defaults)
    local opts = { overrides = {} }
    local problems = {}
    local i = 1
    while args and i <= #args do
        local a = args[i]
        if a == "--help" or a == "-h" then
            opts.help = true
        elseif a == "--resume" then
            opts.resume = args[i + 1] or fail("--resume needs a run folder (runs/<experiment>/fold<k>)")
            i = i + 1
        elseif a:match("^%-%-resume=") then
            opts.resume = a:match("^%-%-resume=(.*)$")
        elseif a == "--overwrite" then
            opts.overwrite = true
        elseif a:match("^%-%-[%w_%.]+=") then
            local path, text = a:match("^%-%-([%w_%.]+)=(.*)$")
            local ok, err = pcall(M.set, cfg, path, text, list_kinds)
            if not ok then
                if not tostring(err):match("^config: ") then error(err, 0) end -- not a value's problem
                problems[#problems + 1] = err:sub(#"config: " + 1)
            end
            opts.overrides[#opts.overrides + 1] = { path = path, text = text }
        else
            fail(string.format("cannot read argument '%s': expected --section.key=value, "
                               .. "--resume <run folder>, --overwrite or --help", a))
        end
        i = i + 1
    end
    fail_all(problems)
    return cfg, opts
end

local function show(v)
    if type(v) == "table" then
        local parts = {}
        for _, x in ipairs(v) do parts[#parts + 1] = tostring(x) end
        return "[" .. table.concat(parts, ", ") .. "]"
    end
    return tostring(v)
end

-- Every setting of cfg as {path = "section.key" or "key", section =, key =},
-- sorted by path.
local function settings(cfg)
    local out = {}
    for _, k in ipairs(sorted_keys(cfg)) do
        if is_section(cfg[k]) then
            for _, key in ipairs(sorted_keys(cfg[k])) do
                out[#out + 1] = { path = k .. "." .. key, section = cfg[k], key = key }
            end
        else
            out[#out + 1] = { path = k, section = cfg, key = k }
        end
    end
    return out
end

--- "section.key = value" lines, sorted, for --help and logs.
function M.describe(cfg)
    local lines = {}
    for _, s in ipairs(settings(cfg)) do
        lines[#lines + 1] = string.format("%s = %s", s.path, show(s.section[s.key]))
    end
    return lines
end

-- ---- schema ---------------------------------------------------------------
--
-- A schema maps "section.key" (or a top-level "key") to a spec:
--   { "integer" | "number" | "boolean" | "string" | "list",
--     values = {...},         allowed strings, matched in any case and stored
--                             as spelt here (--architecture.pool=avg is Avg)
--     min =, max =,           inclusive bounds; above =, below = exclusive ones
--     item = "integer",       list elements that must be integers (as numbers or text)
--     nonempty = true,        a string or list that must not be empty
--     check = function(v, cfg) -> problem text or nil,   rules across keys
--     rule = "...",           the rule in words, where check adds to it
--     before = value,         for a key added after runs were written: the value
--                             that reproduces what those runs did (a resumed one
--                             gets it, said in a line; see machrt.run_folder)
--     about = "..." }         what the key means (--help)

local NOUNS = { integer = "an integer", number = "a number", boolean = "true or false",
                string = "text", list = "a comma-separated list" }

local function num(v) return string.format("%.10g", v) end

--- The rule of a spec in words: "an integer >= 1", "one of GeM, Avg", ...
function M.rule(spec)
    local words
    if spec.values then
        local names = {}
        for i, v in ipairs(spec.values) do names[i] = tostring(v) end
        words = "one of " .. table.concat(names, ", ")
    else
        words = NOUNS[spec[1]] or error("config: unknown schema type " .. tostring(spec[1]), 2)
        if spec[1] == "list" and spec.item == "integer" then words = words .. " of integers" end
        local lo = spec.min ~= nil and "[" .. num(spec.min) or spec.above ~= nil and "(" .. num(spec.above)
        local hi = spec.max ~= nil and num(spec.max) .. "]" or spec.below ~= nil and num(spec.below) .. ")"
        if lo and hi then
            words = string.format("%s in %s, %s", words, lo, hi)
        elseif lo then
            words = string.format("%s %s %s", words, spec.min ~= nil and ">=" or ">", lo:sub(2))
        elseif hi then
            words = string.format("%s %s %s", words, spec.max ~= nil and "<=" or "<", hi:sub(1, -2))
        end
        if spec.nonempty then
            local article = words:match("^an? ")
            words = article and "a non-empty " .. words:sub(#article + 1) or "non-empty " .. words
        end
    end
    if spec.rule then words = words .. ", " .. spec.rule end
    return words
end

local function in_range(v, spec)
    return not ((spec.min and v < spec.min) or (spec.max and v > spec.max)
                or (spec.above and v <= spec.above) or (spec.below and v >= spec.below))
end

local function as_integer(v)
    if type(v) == "string" then v = tonumber(v) end
    if math.type(v) == "float" and v == math.floor(v) then return math.tointeger(v) end
    return math.type(v) == "integer" and v or nil
end

-- The value as the code uses it (integers as integers, allowed strings as
-- spelt in the schema), or nil when it breaks the spec's own rule.
local function conform(v, spec)
    local kind = spec[1]
    if kind == "integer" then
        v = as_integer(type(v) == "number" and v or nil)
        if v == nil or not in_range(v, spec) then return nil end
    elseif kind == "number" then
        if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then return nil end
        if not in_range(v, spec) then return nil end
    elseif kind == "boolean" then
        if type(v) ~= "boolean" then return nil end
    elseif kind == "string" then
        if type(v) ~= "string" or (spec.nonempty and v == "") then return nil end
        if spec.values then
            for _, allowed in ipairs(spec.values) do
                if allowed:lower() == v:lower() then return allowed end
            end
            return nil
        end
    elseif kind == "list" then
        if type(v) ~= "table" or (spec.nonempty and #v == 0) then return nil end
        for _, item in ipairs(v) do
            if spec.item == "integer" then
                local n = as_integer(item)
                if n == nil or not in_range(n, spec) then return nil end
            elseif type(item) ~= "string" or item == "" then
                return nil
            end
        end
    end
    return v
end

--- A value as messages show it: strings quoted, lists in brackets.
local function shown(v)
    if type(v) == "string" then return "'" .. v .. "'" end
    if math.type(v) == "float" then return num(v) end
    return show(v)
end
M.shown = shown

--- The problems of cfg against schema, one line each ("key = value:
--- expects ..."), in key order; canonicalises the values it accepts. A
--- setting with no spec is the experiment's mistake, raised as such.
function M.problems(cfg, schema)
    local problems, ok = {}, true
    local checked = {}
    for _, s in ipairs(settings(cfg)) do
        local spec = schema[s.path]
        if not spec then
            error(string.format("config: setting '%s' has no schema entry (every key of the "
                                .. "defaults needs one: see machrt.schema)", s.path), 2)
        end
        local v = s.section[s.key]
        local good = conform(v, spec)
        if good == nil then
            problems[#problems + 1] = string.format("%s = %s: expects %s", s.path, shown(v), M.rule(spec))
            ok = false
        else
            s.section[s.key] = good
            if spec.check then checked[#checked + 1] = s end
        end
    end
    -- Rules across keys read the others, which may be the broken ones.
    for _, s in ipairs(checked) do
        local done, why = pcall(schema[s.path].check, s.section[s.key], cfg)
        if not done and ok then error(why, 0) end
        if done and why then
            problems[#problems + 1] = string.format("%s = %s: %s", s.path, shown(s.section[s.key]), why)
        end
    end
    table.sort(problems)
    return problems
end

--- Checks every setting of cfg against schema; raises one error that lists
--- every problem (a user's error: no position), else returns cfg with its
--- values canonicalised.
function M.validate(cfg, schema)
    fail_all(M.problems(cfg, schema))
    return cfg
end

--- --help lines: "section.key = value", then, indented below it, the rule
--- and the meaning of the key.
function M.help(cfg, schema)
    local lines = {}
    for _, s in ipairs(settings(cfg)) do
        local spec = schema[s.path] or {}
        lines[#lines + 1] = string.format("%s = %s", s.path, show(s.section[s.key]))
        local rule = spec[1] and M.rule(spec)
        if rule or spec.about then
            lines[#lines + 1] = "    " .. (rule or "") .. (rule and spec.about and ": " or "") .. (spec.about or "")
        end
    end
    return lines
end

return M
