-- What the interactive prompt adds: the usual modules as globals, and
-- results shown by value (a table's contents, not its address).
--
--   machrt> p.classes
--   {"fan", "pump", "slider", "valve"}

local M = {}

--- Globals for interactive work: mt, audio, nn, optim, data (only those
--- not already set).
function M.setup()
    local names = { mt = "machrt", audio = "machrt.audio", nn = "machrt.nn", optim = "machrt.optim",
                    data = "machrt.data" }
    for global, module in pairs(names) do
        if rawget(_G, global) == nil then
            local ok, value = pcall(require, module)
            if ok then rawset(_G, global, value) end
        end
    end
end

local MAX_ITEMS, MAX_DEPTH = 24, 2

local function is_identifier(k)
    return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function show_value(v, depth, seen)
    local t = type(v)
    if t == "string" then return depth > 0 and string.format("%q", v) or v end
    if t ~= "table" or getmetatable(v) and getmetatable(v).__tostring then return tostring(v) end
    if seen[v] then return "<cycle>" end
    if depth >= MAX_DEPTH then return "{...}" end
    seen[v] = true
    local parts, n = {}, #v
    for i = 1, math.min(n, MAX_ITEMS) do parts[#parts + 1] = show_value(v[i], depth + 1, seen) end
    local keys = {}
    for k in pairs(v) do
        if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
        if #parts >= MAX_ITEMS then break end
        local key = is_identifier(k) and k or "[" .. show_value(k, depth + 1, seen) .. "]"
        parts[#parts + 1] = key .. " = " .. show_value(v[k], depth + 1, seen)
    end
    local hidden = n + #keys - #parts
    if hidden > 0 then parts[#parts + 1] = string.format("... (%d more)", hidden) end
    seen[v] = nil
    return "{" .. table.concat(parts, ", ") .. "}"
end

--- Prints results as the prompt shows them: tab-separated, tables by value.
function M.show(...)
    local out = {}
    for i = 1, select("#", ...) do out[i] = show_value((select(i, ...)), 0, {}) end
    io.write(table.concat(out, "\t"), "\n")
end

return M
