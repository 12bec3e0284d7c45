-- nn.ReLU({inplace = false})
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"

local ReLU = Module.class("ReLU", Module)

function ReLU:__init(opts) self.inplace = opts and opts.inplace or false end

function ReLU:describe() return self.inplace and "inplace" or nil end

function ReLU:forward(x)
  local y = self.inplace and x or Module.reuse(self.output, x:shape())
  self.output = self:kernel(K.relu_forward, x, y)
  return self.output
end

-- The mask comes from the output, so in-place operation loses nothing.
function ReLU:backward(x, grad_output)
  self.gradInput = self:kernel(K.relu_backward, self.output, grad_output,
    Module.reuse(self.gradInput, grad_output:shape()))
  return self.gradInput
end

return ReLU
