-- nn.Conv2d(cin, cout, k, {stride = 1, padding = 0, bias = true})
local mt = require "machrt"
local K = require "machrt.kernels"
local Module = require "machrt.nn.module"

local Conv2d = Module.class("Conv2d", Module)

local function pair(v, what)
    if type(v) == "table" then return v[1], v[2] end
    if math.type(v) ~= "integer" then error(("Conv2d: %s must be an integer or a pair"):format(what), 4) end
    return v, v
end

-- One scratch area shared by every convolution of this Lua state: layers run
-- one at a time, so they can take turns with the same im2col buffer.
local shared_workspace

function Conv2d:__init(cin, cout, k, opts)
    opts = opts or {}
    for _, v in ipairs{cin, cout} do
        if math.type(v) ~= "integer" or v < 1 then error("Conv2d: channel counts must be positive integers", 3) end
    end
    self.cin, self.cout = cin, cout
    self.kh, self.kw = pair(k, "kernel size")
    self.sh, self.sw = pair(opts.stride or 1, "stride")
    self.ph, self.pw = pair(opts.padding or 0, "padding")
    -- PyTorch's default initialisation: U(-b, b), b = 1/sqrt(fan_in).
    local bound = 1 / math.sqrt(cin * self.kh * self.kw)
    self:register_parameter("weight", Module.uniform_param({cout, cin, self.kh, self.kw}, bound))
    if opts.bias ~= false then
        self:register_parameter("bias", Module.uniform_param({cout}, bound))
    end
    self.need_input_grad = true
    shared_workspace = shared_workspace or K.workspace()
    self.workspace = shared_workspace
end

function Conv2d:describe()
    return ("%d, %d, kernel=%dx%d, stride=%dx%d, padding=%dx%d%s"):format(self.cin, self.cout,
        self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.params.bias and "" or ", bias=false")
end

function Conv2d:output_shape(x)
    local oh = (x:size(3) + 2 * self.ph - self.kh) // self.sh + 1
    local ow = (x:size(4) + 2 * self.pw - self.kw) // self.sw + 1
    if oh < 1 or ow < 1 then
        self:fail("input %s is too small for kernel %dx%d with padding %dx%d",
            Module.shape_str(x), self.kh, self.kw, self.ph, self.pw)
    end
    return {x:size(1), self.cout, oh, ow}
end

function Conv2d:forward(x)
    self:check_input(x, 4, 2, self.cin, ("N x %d x H x W"):format(self.cin))
    local p = self.params
    self.output = self:kernel(K.conv2d_forward, x, p.weight.param, p.bias and p.bias.param,
        self.sh, self.sw, self.ph, self.pw, self.workspace, Module.reuse(self.output, self:output_shape(x), x),
        not self.train)
    return self.output
end

-- Returns nil when need_input_grad is false (the first layer of a network).
function Conv2d:backward(x, grad_output)
    local p = self.params
    local dx = self:kernel(K.conv2d_backward, x, p.weight.param, grad_output,
        self.sh, self.sw, self.ph, self.pw, self.workspace, self.need_input_grad and x:new_empty() or false,
        p.weight.grad, p.bias and p.bias.grad or false)
    return self.need_input_grad and dx or nil
end

return Conv2d
