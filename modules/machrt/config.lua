-- Experiment configs: a table with the reference yaml's sections and keys,
-- command-line overrides `--section.key=value`, and checks.
--
--   local config = require "machrt.config"
--   local cfg, opts = config.from_args(defaults, arg)   -- opts.resume, opts.overwrite, opts.help
--   config.describe(cfg)                                -- "section.key = value" lines
--
-- A value's type is its default's: numbers, booleans (true/false/yes/no/1/0),
-- strings, and lists (comma-separated: --dataset.folds=0,1). An unknown
-- section or key is an error that lists the valid ones.

local M = {}

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys)
    return keys
end

local function fail(msg) error("config: " .. msg, 0) end

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
            v = math.tointeger(v)
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
--- overrides = {...}}.
function M.from_args(defaults, args, list_kinds)
    local cfg = copy(defaults)
    local opts = { overrides = {} }
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
            M.set(cfg, path, text, list_kinds)
            opts.overrides[#opts.overrides + 1] = { path = path, text = text }
        else
            fail(string.format("cannot read argument '%s': expected --section.key=value, "
                               .. "--resume <run folder>, --overwrite or --help", a))
        end
        i = i + 1
    end
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

--- "section.key = value" lines, sorted, for --help and logs.
function M.describe(cfg)
    local lines = {}
    for _, k in ipairs(sorted_keys(cfg)) do
        local v = cfg[k]
        if is_section(v) then
            for _, key in ipairs(sorted_keys(v)) do
                lines[#lines + 1] = string.format("%s.%s = %s", k, key, show(v[key]))
            end
        else
            lines[#lines + 1] = string.format("%s = %s", k, show(v))
        end
    end
    return lines
end

return M
