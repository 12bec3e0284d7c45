-- nn.Sequential{...} (children named "0", "1", ... as in PyTorch, or added
-- by name with :add) and nn.Flatten().
local Module = require "machrt.nn.module"

local Sequential = Module.class("Sequential", Module)

function Sequential:__init(list)
    for i, m in ipairs(list or {}) do self:add(tostring(i - 1), m) end
end

function Sequential:forward(x)
    -- Each child's input is kept for the backward pass.
    self.inputs = self.inputs or {}
    for i, name in ipairs(self.child_order) do
        self.inputs[i] = x
        x = self.children[name]:forward(x)
    end
    self.output = x
    return x
end

-- Each intermediate gradient is released once the child before has used it
-- (never the caller's grad_output, nor one a child handed back unchanged),
-- and each inner activation once both its producer and its consumer are
-- done with it. The last child's output is the caller's, and is kept; an
-- output that is also the previous child's (in-place ReLU, inactive
-- dropout) is released with that one.
function Sequential:backward(x, grad_output)
    local g = grad_output
    local n = #self.child_order
    for i = n, 1, -1 do
        local child = self.children[self.child_order[i]]
        if g == nil then
            error(("%s: %s returned no input gradient, but the modules before it need one")
                :format(self:where(), self.children[self.child_order[i + 1]]:where()), 2)
        end
        -- A gradient this container made itself may be overwritten by the child.
        local gi = child:backward(self.inputs[i], g, g ~= grad_output)
        if g ~= grad_output and g ~= gi then g:release() end
        g = gi
        if i < n and child.output ~= self.inputs[i] then Module.free(child.output) end
    end
    return g
end

local Flatten = Module.class("Flatten", Module)

function Flatten:forward(x)
    self:check_input(x, x:dim() >= 1 and x:dim() or 1, nil, nil, "N x ...")
    self.output = x:reshape{x:size(1), -1}
    return self.output
end

function Flatten:backward(x, grad_output)
    return grad_output:reshape(x:shape())
end

return {Sequential = Sequential, Flatten = Flatten}
