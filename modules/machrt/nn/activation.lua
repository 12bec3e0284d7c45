-- nn.ReLU({inplace = false})
local mt = require "machrt"
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"

local ReLU = Module.class("ReLU", Module)

function ReLU:__init(opts) self.inplace = opts and opts.inplace or false end

function ReLU:describe() return self.inplace and "inplace" or nil end

function ReLU:forward(x)
    local y = self.inplace and x or Module.reuse(self.output, x:shape(), x)
    self.output = self:kernel(K.relu_forward, x, y)
    return self.output
end

-- The mask comes from the output, so in-place operation loses nothing.
-- grad_is_scratch: the caller will not use grad_output again, so the
-- gradient is computed in it.
function ReLU:backward(x, grad_output, grad_is_scratch)
    local dx = grad_is_scratch and grad_output or grad_output:new_empty()
    return (self:kernel(K.relu_backward, self.output, grad_output, dx))
end

return ReLU
