-- nn.Linear(cin, cout, {bias = true}): y = x w^T + b on N x cin inputs.
local mt = require "machrt"
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"

local Linear = Module.class("Linear", Module)

function Linear:__init(cin, cout, opts)
    for _, v in ipairs{cin, cout} do
        if math.type(v) ~= "integer" or v < 1 then error("Linear: sizes must be positive integers", 3) end
    end
    self.cin, self.cout = cin, cout
    -- PyTorch's default initialisation: U(-b, b), b = 1/sqrt(fan_in).
    local bound = 1 / math.sqrt(cin)
    self:register_parameter("weight", Module.uniform_param({cout, cin}, bound))
    if not (opts and opts.bias == false) then
        self:register_parameter("bias", Module.uniform_param({cout}, bound))
    end
end

function Linear:describe() return ("%d, %d"):format(self.cin, self.cout) end

function Linear:forward(x)
    self:check_input(x, 2, 2, self.cin, ("N x %d"):format(self.cin))
    local p = self.params
    self.output = self:kernel(K.linear_forward, x, p.weight.param, p.bias and p.bias.param,
        Module.reuse(self.output, {x:size(1), self.cout}, x))
    return self.output
end

function Linear:backward(x, grad_output)
    local p = self.params
    return (self:kernel(K.linear_backward, x, p.weight.param, grad_output, x:new_empty(),
        p.weight.grad, p.bias and p.bias.grad or false))
end

return Linear
