-- ResNets with torchvision's structure, initialisation and state-dict names,
-- so weights move to and from torchvision.models.resnet18/34 (with a
-- 1-channel conv1 when in_channels = 1).
local Module = require "machrt.nn.module"
local Conv2d = require "machrt.nn.conv"
local BatchNorm2d = require "machrt.nn.batchnorm"
local ReLU = require "machrt.nn.activation"
local Linear = require "machrt.nn.linear"
local Dropout = require "machrt.nn.dropout"
local pooling = require "machrt.nn.pooling"
local containers = require "machrt.nn.containers"

local Sequential, Flatten = containers.Sequential, containers.Flatten

-- The residual block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
local BasicBlock = Module.class("BasicBlock", Module)

function BasicBlock:__init(inplanes, planes, stride)
    stride = stride or 1
    self:add("conv1", Conv2d(inplanes, planes, 3, {stride = stride, padding = 1, bias = false}))
    self:add("bn1", BatchNorm2d(planes))
    self:add("relu", ReLU{inplace = true})
    self:add("conv2", Conv2d(planes, planes, 3, {padding = 1, bias = false}))
    self:add("bn2", BatchNorm2d(planes))
    if stride ~= 1 or inplanes ~= planes then
        self:add("downsample", Sequential{
            Conv2d(inplanes, planes, 1, {stride = stride, bias = false}),
            BatchNorm2d(planes),
        })
    end
    self.out_relu = ReLU{inplace = true}
end

-- The residual sum is formed in bn2's output (its backward needs only its
-- input) and the ReLUs work in place, so a block keeps four activations.
function BasicBlock:forward(x)
    local c = self.children
    local h = c.relu:forward(c.bn1:forward(c.conv1:forward(x)))
    local main = c.bn2:forward(c.conv2:forward(h))
    if c.downsample then
        local shortcut = c.downsample:forward(x)
        main:add_(shortcut)
        Module.free(shortcut) -- the sum does not need it again
    else
        main:add_(x)
    end
    self.output = self.out_relu:forward(main)
    return self.output
end

-- Frees each inner activation as soon as its last user is done; the
-- block's output (bn2's, summed in place) is its parent's to free.
function BasicBlock:backward(x, grad_output, grad_is_scratch)
    local c = self.children
    local free = Module.free
    local g = self.out_relu:backward(x, grad_output, grad_is_scratch)
    local t = c.bn2:backward(c.conv2.output, g); free(c.conv2.output)
    local u = c.conv2:backward(c.relu.output, t); t:release()
    local v = c.relu:backward(c.bn1.output, u, true); free(c.bn1.output)
    local w = c.bn1:backward(c.conv1.output, v); v:release(); free(c.conv1.output)
    local gx = c.conv1:backward(x, w); w:release()
    if c.downsample then
        local gs = c.downsample:backward(x, g)
        gx:add_(gs)
        gs:release()
    else
        gx:add_(g)
    end
    if g ~= grad_output then g:release() end
    return gx
end

-- Kaiming normal, fan_out, for ReLU (torchvision's choice for ResNets).
local function kaiming_normal_fan_out(w)
    local s = w:shape()
    w:normal_(0, math.sqrt(2 / (s[1] * s[3] * s[4])))
end

local build_model

local function build(blocks, opts)
    opts = opts or {}
    if opts.init == false then
        -- No initialisation at all: the weights are loaded next (a scorer,
        -- predictions), and drawing 21 M random numbers twice is most of a build.
        local o = {}
        for k, v in pairs(opts) do o[k] = v end
        o.init = nil
        return Module.without_init(function() return build_model(blocks, o) end)
    end
    return build_model(blocks, opts)
end

build_model = function(blocks, opts)
    local valid = {in_channels = true, num_classes = true, pool = true, dropout = true, gem_p = true,
                                  input_grad = true, width = true, init = true}
    for k in pairs(opts) do
        if not valid[k] then
            error(("resnet: unknown option '%s' (valid: in_channels, num_classes, pool, dropout, gem_p, input_grad, width, init)")
                :format(tostring(k)), 3)
        end
    end
    local in_channels = opts.in_channels or 3
    local num_classes = opts.num_classes or 1000
    local pool = opts.pool or "avg"
    if pool ~= "avg" and pool ~= "gem" then
        error(("resnet: pool must be 'avg' or 'gem', got '%s'"):format(tostring(pool)), 3)
    end
    -- width: channels of the first stage (64 in torchvision); the stages
    -- double it. Narrow networks make quick end-to-end tests.
    local width = opts.width or 64
    if math.type(width) ~= "integer" or width < 1 then
        error(("resnet: width must be a positive integer, got %s"):format(tostring(width)), 3)
    end
    local model = Sequential()
    model.__name = "ResNet"
    model:add("conv1", Conv2d(in_channels, width, 7, {stride = 2, padding = 3, bias = false}))
    model:add("bn1", BatchNorm2d(width))
    model:add("relu", ReLU{inplace = true})
    model:add("maxpool", pooling.MaxPool2d(3, 2, 1))
    local inplanes = width
    for i, planes in ipairs{width, 2 * width, 4 * width, 8 * width} do
        local layer = Sequential()
        for j = 1, blocks[i] do
            layer:add(tostring(j - 1), BasicBlock(inplanes, planes, (j == 1 and i > 1) and 2 or 1))
            inplanes = planes
        end
        model:add("layer" .. i, layer)
    end
    if pool == "gem" then
        model:add("pool", pooling.GeM{p = opts.gem_p or 3})
    else
        model:add("avgpool", pooling.AdaptiveAvgPool2d(1))
    end
    model:add("flatten", Flatten())
    model:add("dropout", Dropout(opts.dropout or 0))
    model:add("fc", Linear(8 * width, num_classes))
    -- The gradient with respect to the input image is rarely needed and costs
    -- a full convolution; ask for it with input_grad = true.
    model.children.conv1.need_input_grad = opts.input_grad == true
    if not Module.skip_init then
        model:apply(function(m)
            if m.__name == "Conv2d" then kaiming_normal_fan_out(m.params.weight.param) end
        end)
    end
    return model:flatten_parameters()
end

local resnet = {BasicBlock = BasicBlock}
function resnet.resnet18(opts) return build({2, 2, 2, 2}, opts) end
function resnet.resnet34(opts) return build({3, 4, 6, 3}, opts) end
return resnet
