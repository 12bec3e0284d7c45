-- machrt.nn modules: wiring (finite differences through composed modules),
-- state dicts, flat parameter buffers, modes, and errors naming the module.
local mt = require "machrt"
local nn = require "machrt.nn"
local A = require "assert"

local tests = {}

-- A small net using every layer type, the residual block included.
local function small_net()
    mt.manual_seed(3)
    local net = nn.Sequential{
        nn.Conv2d(2, 3, 3, {padding = 1}),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.BasicBlock(3, 4, 2),
        nn.GeM{p = 2.5},
        nn.Flatten(),
        nn.Linear(4, 2),
    }
    return net:flatten_parameters()
end

local function loss_of(net, x, target)
    return nn.BCEWithLogitsLoss():forward(net:forward(x), target)
end

tests["gradients through composed modules match finite differences"] = function()
    local net = small_net()
    mt.manual_seed(5)
    local x = mt.rand{3, 2, 8, 8} + 0.1
    local target = mt.tensor{{1, 0}, {0, 1}, {1, 0}}
    local loss_fn = nn.BCEWithLogitsLoss()
    net:zero_grad()
    local logits = net:forward(x)
    loss_fn:forward(logits, target)
    local gx = net:backward(x, loss_fn:backward(logits, target)):clone()
    -- Central differences on the flat parameter buffer and the input. The step
    -- is small because ReLU and max-pool kinks (and batch statistics over only
    -- a dozen values per channel) make larger steps cross non-smooth points;
    -- the tolerance is relative to the largest gradient, since float32
    -- forward passes limit what a difference quotient can resolve.
    local function check(t, grad, label, count)
        local flat, g = t:reshape{-1}, grad:contiguous():reshape{-1}
        local scale = math.max(g:abs():max(), 1e-3)
        local n = flat:numel()
        for k = 1, count do
            local idx = (k * 7919) % n + 1
            local old = flat:get(idx)
            local h = 1e-3
            flat:set(old + h, idx); local lp = loss_of(net, x, target)
            flat:set(old - h, idx); local lm = loss_of(net, x, target)
            flat:set(old, idx)
            local fd = (lp - lm) / (2 * h)
            if math.abs(fd - g:get(idx)) > 3e-2 * scale then
                error(("%s[%d]: analytic %.6g, finite difference %.6g"):format(label, idx, g:get(idx), fd), 2)
            end
        end
    end
    check(net.flat_params, net.flat_grads, "parameters", 40)
    check(x, gx, "input", 20)
end

tests["backward accumulates parameter gradients; zero_grad clears them"] = function()
    local net = small_net()
    local x = mt.rand{2, 2, 8, 8}
    local target = mt.tensor{{1, 0}, {0, 1}}
    local loss_fn = nn.BCEWithLogitsLoss()
    net:evaluate() -- fixed statistics, so both passes see the same function
    net:zero_grad()
    local logits = net:forward(x)
    net:backward(x, loss_fn:backward(logits, target))
    local once = net.flat_grads:clone()
    logits = net:forward(x)
    net:backward(x, loss_fn:backward(logits, target))
    A.truthy((net.flat_grads - once * 2):abs():max() <= 1e-5 * math.max(once:abs():max(), 1))
    net:zero_grad()
    A.eq(net.flat_grads:abs():max(), 0)
end

tests["parameters are views of one flat buffer"] = function()
    local net = small_net()
    local total = 0
    for _, p in ipairs(net:parameters()) do total = total + p.param:numel() end
    A.eq(net.flat_params:numel(), total)
    net.flat_params:fill(0.25)
    for _, p in ipairs(net:parameters()) do A.eq(p.param:max(), 0.25, p.name) end
    net.flat_grads:fill(1)
    for _, p in ipairs(net:parameters()) do A.eq(p.grad:min(), 1, p.name) end
end

tests["resnet parameter names follow torchvision"] = function()
    local m = nn.resnet18{in_channels = 1, num_classes = 4, pool = "gem"}
    local names = {}
    for _, p in ipairs(m:parameters()) do names[p.name] = p.param:shape() end
    A.eq(names["conv1.weight"], {64, 1, 7, 7})
    A.eq(names["layer1.0.conv1.weight"], {64, 64, 3, 3})
    A.eq(names["layer2.0.downsample.0.weight"], {128, 64, 1, 1})
    A.eq(names["layer2.0.downsample.1.weight"], {128})
    A.eq(names["pool.p"], {1})
    A.eq(names["fc.weight"], {4, 512})
    local sd = m:state_dict()
    A.eq(sd["layer4.1.bn2.running_var"]:shape(), {512})
    A.eq(sd["bn1.num_batches_tracked"]:dtype(), "int64")
end

tests["resnet initialisation: Kaiming normal fan_out convs, unit BN"] = function()
    mt.manual_seed(11)
    local m = nn.resnet18{in_channels = 1, num_classes = 4}
    local w = m:state_dict()["layer3.0.conv2.weight"]
    local std = math.sqrt((w * w):mean())
    A.near(std, math.sqrt(2 / (256 * 9)), 0.02 * math.sqrt(2 / (256 * 9)))
    A.eq(m:state_dict()["layer3.0.bn2.weight"]:min(), 1)
    A.eq(m:state_dict()["layer3.0.bn2.bias"]:max(), 0)
end

tests["state dict round trip through safetensors gives identical outputs"] = function()
    local a, b = small_net(), small_net()
    b.flat_params:fill(0)
    local path = os.tmpname()
    mt.save(path, a:state_dict())
    b:load_state_dict((mt.load(path)))
    os.remove(path)
    a:evaluate(); b:evaluate()
    local x = mt.rand{2, 2, 8, 8}
    A.eq(a:forward(x):totable(), b:forward(x):totable())
end

tests["load_state_dict lists missing, unexpected and mismatched keys"] = function()
    local net = small_net()
    local sd = net:state_dict()
    local bad = {}
    for k, v in pairs(sd) do bad[k] = v end
    bad["0.weight"] = nil
    bad["extra.weight"] = mt.zeros{1}
    bad["7.bias"] = mt.zeros{5}
    A.raises(function() net:load_state_dict(bad) end,
        "missing keys: 0.weight", "unexpected keys: extra.weight", "7.bias (expected 2, got 5)")
    local before = sd["1.weight"]:clone()
    bad["1.weight"] = mt.full({3}, 7)
    local report = net:load_state_dict(bad, {strict = false})
    A.eq(report.missing, {"0.weight"})
    A.eq(report.unexpected, {"extra.weight"})
    A.eq(#report.mismatched, 1)
    A.eq(net:state_dict()["1.weight"]:totable(), {7, 7, 7})
    A.truthy(before:get(1) ~= 7)
end

tests["forward errors name the module path and the shapes"] = function()
    local m = nn.resnet18{in_channels = 1, num_classes = 4}
    A.raises(function() m:forward(mt.zeros{2, 3, 64, 64}) end, "conv1 (Conv2d)", "N x 1 x H x W", "2x3x64x64")
    local conv = m.children.layer2.children["0"].children.conv1
    A.raises(function() conv:forward(mt.zeros{1, 32, 8, 8}) end, "layer2.0.conv1 (Conv2d)", "1x32x8x8")
    A.raises(function() m:forward(mt.zeros{1, 1, 8, 8}) end, "layer2.0.bn1 (BatchNorm2d)",
        "more than one value per channel", "1x128x1x1")
    A.raises(function() nn.Conv2d(1, 2, 7):forward(mt.zeros{1, 1, 3, 3}) end, "too small", "1x1x3x3")
    A.raises(function() m:forward(mt.zeros{1, 128}) end, "conv1", "1x128")
    local fc = nn.Linear(4, 2)
    A.raises(function() fc:forward(mt.zeros{3, 5}) end, "(Linear)", "N x 4", "3x5")
end

tests["training and evaluation modes propagate; dropout is identity in evaluation"] = function()
    local m = nn.resnet18{in_channels = 1, num_classes = 4, dropout = 0.5}
    m:evaluate()
    m:apply(function(sub) A.eq(sub.train, false) end)
    local d = m.children.dropout
    local x = mt.rand{2, 512}
    A.eq(d:forward(x):totable(), x:totable())
    m:training()
    A.eq(d.train, true)
    local y = d:forward(x)
    local zeros = 0
    for _, v in ipairs(y:reshape{-1}:totable()) do if v == 0 then zeros = zeros + 1 end end
    A.truthy(zeros > 0 and zeros < 1024)
end

tests["losses: BCE with soft targets and cross entropy with 1-based classes"] = function()
    local z = mt.tensor{{0.5, -1.0, 2.0}, {1.5, 0.0, -0.5}}
    local soft = mt.tensor{{0.2, 0.0, 1.0}, {1.0, 0.5, 0.0}}
    local expect = 0
    for i = 1, 2 do
        for j = 1, 3 do
            local x, t = z:get(i, j), soft:get(i, j)
            expect = expect + math.max(x, 0) - x * t + math.log(1 + math.exp(-math.abs(x)))
        end
    end
    A.near(nn.BCEWithLogitsLoss():forward(z, soft), expect / 6, 1e-6)
    local classes = mt.tensor({3, 1}, "int64")
    local ce = 0
    for i, c in ipairs{3, 1} do
        local s = 0
        for j = 1, 3 do s = s + math.exp(z:get(i, j)) end
        ce = ce + math.log(s) - z:get(i, c)
    end
    A.near(nn.CrossEntropyLoss():forward(z, classes), ce / 2, 1e-6)
    A.raises(function() nn.BCEWithLogitsLoss():forward(z, mt.zeros{2, 4}) end, "2x4", "2x3")
end

tests["tostring shows the module tree"] = function()
    local s = tostring(nn.resnet18{in_channels = 1, num_classes = 4})
    A.truthy(s:find("ResNet", 1, true) and s:find("(layer1): Sequential", 1, true)
        and s:find("Conv2d(64, 64, kernel=3x3", 1, true), s)
end

tests["unknown resnet options are rejected"] = function()
    A.raises(function() nn.resnet34{num_clases = 4} end, "unknown option 'num_clases'")
    A.raises(function() nn.resnet34{pool = "max"} end, "pool must be 'avg' or 'gem'")
    A.raises(function() nn.resnet34():to("cuda") end, "cuda")
end

tests["clear_state releases activations, keeps the input, and changes no result"] = function()
    local model = nn.resnet18{in_channels = 1, num_classes = 3, width = 8}
    mt.manual_seed(5)
    local x = mt.randn{4, 1, 32, 48}
    local y1 = model:forward(x):clone()
    local live_before = mt.memory_stats().live
    model:clear_state()
    A.truthy(mt.memory_stats().live < live_before, "activations released")
    A.eq(rawget(model.children.layer1.children["0"], "output"), nil, "block output dropped")
    A.eq(rawget(model.children.layer1.children["0"].out_relu, "output"), nil, "helper ReLU output dropped")
    A.eq(x:is_released(), false, "the caller's input is kept")
    A.near(x:sum(), x:clone():sum(), 0, "input intact")
    -- Forward and backward work again, with the same numbers (training mode
    -- updates BN statistics, so compare in evaluation mode).
    model:evaluate()
    local e1 = model:forward(x):clone()
    model:clear_state()
    local e2 = model:forward(x)
    A.eq((e1 - e2):abs():max(), 0, "same evaluation output after clear_state")
    model:training()
    local out = model:forward(x)
    model:backward(x, mt.ones(out:shape()))
    A.eq(y1:dim(), 2)
end

return tests
