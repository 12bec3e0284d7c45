-- nn.dcase_autoencoder{input = 640, hidden = 128, bottleneck = 8, depth = 4}:
-- the DCASE 2020 Task 2 baseline autoencoder (Koizumi et al., keras_model.py):
-- Dense(hidden) + BatchNormalization + ReLU, depth times, the same into the
-- bottleneck, depth times back out, and a linear Dense(input). Keras'
-- settings are kept: glorot-uniform weights, zero biases, batch norm with
-- epsilon 1e-3 and moving-average momentum 0.99 (0.01 in PyTorch's terms).
local Module = require "machrt.nn.module"
local Linear = require "machrt.nn.linear"
local BatchNorm1d = require "machrt.nn.batchnorm1d"
local ReLU = require "machrt.nn.activation"
local containers = require "machrt.nn.containers"

local function dense(cin, cout)
    local layer = Linear(cin, cout)
    if not Module.skip_init then
        layer.params.weight.param:uniform_(-math.sqrt(6 / (cin + cout)), math.sqrt(6 / (cin + cout)))
        layer.params.bias.param:fill(0)
    end
    return layer
end

return function(opts)
    opts = opts or {}
    local input, hidden = opts.input or 640, opts.hidden or 128
    local bottleneck, depth = opts.bottleneck or 8, opts.depth or 4
    for key, v in pairs{ input = input, hidden = hidden, bottleneck = bottleneck, depth = depth } do
        if math.type(v) ~= "integer" or v < 1 then
            error(("dcase_autoencoder: %s must be a positive integer, got %s"):format(key, tostring(v)), 2)
        end
    end
    local layers, width = {}, input
    local function block(cout)
        layers[#layers + 1] = dense(width, cout)
        layers[#layers + 1] = BatchNorm1d(cout, { eps = 1e-3, momentum = 0.01 })
        layers[#layers + 1] = ReLU{ inplace = true } -- batch norm's backward needs its input, not its output
        width = cout
    end
    for _ = 1, depth do block(hidden) end
    block(bottleneck)
    for _ = 1, depth do block(hidden) end
    layers[#layers + 1] = dense(width, input)
    return containers.Sequential(layers)
end
