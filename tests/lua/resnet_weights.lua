-- Deterministic ResNet weights shared with tests/fixtures/gen_resnet_fixtures.py:
-- an exact integer hash, so Lua and numpy produce the same float32 values.
local mt = require "machrt"

local M = {}

-- Values in [-1, 1] for indices 0..numel-1 (see hashed_values in the script).
function M.hashed_values(numel, seed)
    local out = {}
    local base = seed * 40503 + 12345
    for i = 0, numel - 1 do
        local x = (i * 2654435761 + base) & 0xffffffff
        x = x ~ (x >> 13)
        x = (x * 1274126177) & 0xffffffff
        x = x ~ (x >> 16)
        out[i + 1] = ((x % 20001) - 10000) / 10000.0
    end
    return out
end

local function map(values, fn)
    for i = 1, #values do values[i] = fn(values[i]) end
    return values
end

-- The value of state-dict entry `name` (see value_for in the script).
function M.value_for(name, shape, seed)
    local n = 1
    for _, d in ipairs(shape) do n = n * d end
    local v = M.hashed_values(n, seed)
    if name:match("running_var$") then
        map(v, function(a) return 1.0 + 0.3 * a end)
    elseif name:match("running_mean$") then
        map(v, function(a) return 0.1 * a end)
    elseif (name:match("%.bias$") and name:match("bn")) or name:match("downsample%.1%.bias$") then
        map(v, function(a) return 2.0 + 0.1 * a end)
    elseif name:match("%.weight$") and #shape == 1 then
        map(v, function(a) return 1.0 + 0.1 * a end)
    elseif #shape == 4 then
        local s = math.sqrt(3.0) * math.sqrt(2.0 / (shape[2] * shape[3] * shape[4]))
        map(v, function(a) return s * a end)
    elseif name == "fc.weight" then
        local s = 1 / math.sqrt(shape[2])
        map(v, function(a) return a * s end)
    elseif name == "fc.bias" then
        map(v, function(a) return 0.1 * a end)
    else
        error("no rule for " .. name)
    end
    return mt.tensor(v):reshape(shape)
end

-- Fills a model's parameters and running statistics: entry k of the sorted
-- state-dict keys (num_batches_tracked and GeM's pool.p excluded) gets
-- seed k - 1.
function M.fill(model)
    local sd = model:state_dict()
    local keys = {}
    for k in pairs(sd) do
        if not k:match("num_batches_tracked$") and k ~= "pool.p" then keys[#keys + 1] = k end
    end
    table.sort(keys)
    for i, k in ipairs(keys) do
        sd[k]:copy(M.value_for(k, sd[k]:shape(), i - 1))
    end
end

return M
