-- Losses (mean reduction): nn.BCEWithLogitsLoss() on one-hot or soft targets
-- of the logits' shape, nn.CrossEntropyLoss() on class indices (int64,
-- 1-based as everywhere in Lua) or class probabilities, nn.MSELoss() on
-- targets of the input's shape.
local K = require "machrt.kernels"
local mt = require "machrt"

local function shapes_equal(a, b)
    return table.concat(a:shape(), "x") == table.concat(b:shape(), "x")
end

local function loss_class(name, fwd, bwd, check)
    local c = {}
    c.__index = c
    c.__name = name
    setmetatable(c, {__call = function(cls) return setmetatable({}, cls) end})
    function c:forward(logits, target)
        check(name, logits, target)
        local ok, v = pcall(fwd, logits, self:prepare(target))
        if not ok then error(name .. ": " .. tostring(v), 2) end
        return v
    end
    function c:backward(logits, target)
        check(name, logits, target)
        local ok, g = pcall(bwd, logits, self:prepare(target), self.gradInput and shapes_equal(self.gradInput, logits) and self.gradInput or nil)
        if not ok then error(name .. ": " .. tostring(g), 2) end
        self.gradInput = g
        return g
    end
    function c:prepare(target) return target end
    c.__call = function(self, ...) return self:forward(...) end
    return c
end

local function check_tensors(name, logits, target)
    if not mt.is_tensor(logits) or not mt.is_tensor(target) then
        error(name .. ": logits and target must be tensors", 3)
    end
end

local BCEWithLogitsLoss = loss_class("BCEWithLogitsLoss", K.bce_logits_forward, K.bce_logits_backward,
    function(name, logits, target)
        check_tensors(name, logits, target)
        if not shapes_equal(logits, target) then
            error(("%s: target shape %s does not match logits shape %s"):format(name,
                table.concat(target:shape(), "x"), table.concat(logits:shape(), "x")), 3)
        end
    end)

local CrossEntropyLoss = loss_class("CrossEntropyLoss", K.cross_entropy_forward, K.cross_entropy_backward,
    check_tensors)

-- Class indices arrive 1-based from Lua; the kernel counts from 0.
function CrossEntropyLoss:prepare(target)
    if target:dtype() == "int64" then
        return (target:float() - 1):long()
    end
    return target
end

-- Mean squared error, from tensor ops (so it runs on every device):
-- mean((y - t)^2), gradient 2 (y - t) / numel.
-- In place, and the difference released at once: each pass over a
-- 512 x 640 batch costs as much as a small layer, and a batch-sized block
-- left to the garbage collector is a fresh, page-faulting one next step.
-- The gradient is written into the last one (`out`, as the kernels of the
-- other losses do).
local function mse_forward(y, t)
    local d = y - t
    local v = d:mul_(d):mean()
    d:release()
    return v
end

local function mse_backward(y, t, out)
    out = out and not out:is_released() and out:copy(y):sub_(t) or y - t
    return out:mul_(2 / y:numel())
end

local MSELoss = loss_class("MSELoss", mse_forward, mse_backward,
    function(name, y, target)
        check_tensors(name, y, target)
        if not shapes_equal(y, target) then
            error(("%s: target shape %s does not match input shape %s"):format(name,
                table.concat(target:shape(), "x"), table.concat(y:shape(), "x")), 3)
        end
    end)

return {BCEWithLogitsLoss = BCEWithLogitsLoss, CrossEntropyLoss = CrossEntropyLoss, MSELoss = MSELoss}
