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

function Sequential:backward(x, grad_output)
  local g = grad_output
  for i = #self.child_order, 1, -1 do
    g = self.children[self.child_order[i]]:backward(self.inputs[i], g)
  end
  self.gradInput = g
  return g
end

local Flatten = Module.class("Flatten", Module)

function Flatten:forward(x)
  self:check_input(x, x:dim() >= 1 and x:dim() or 1, nil, nil, "N x ...")
  self.output = x:reshape{x:size(1), -1}
  return self.output
end

function Flatten:backward(x, grad_output)
  self.gradInput = grad_output:reshape(x:shape())
  return self.gradInput
end

return {Sequential = Sequential, Flatten = Flatten}
