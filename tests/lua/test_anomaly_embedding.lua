-- The embedding detector's clip features and normal statistics
-- (machrt.anomaly.embedding): the spectrum statistics against sums written
-- out here, "both" as the network's output beside them, and scores that do
-- not depend on the units of a dimension.
local mt = require "machrt"
local A = require "assert"
local emb = require "machrt.anomaly.embedding"
local pipeline = require "machrt.pipeline"

local tests = {}
local function test(name, fn) tests[#tests + 1] = { name, fn } end

local function tiny_model(classes)
    mt.manual_seed(3)
    return pipeline.build_model({ backbone = "resnet18", width = 2, pool = "Avg", dropout = 0 }, classes)
end

test("spectrum features are each log-mel bin's mean and standard deviation over the frames", function()
    mt.manual_seed(7)
    local N, F, T = 2, 5, 9
    local x = mt.randn{ N, 1, F, T } * 4 - 30
    local model = tiny_model(3)
    model:evaluate()
    local e, logits = emb.chunk_features(model, x, "spectrum")
    A.eq(table.concat(e:shape(), "x"), N .. "x" .. 2 * F)
    A.eq(table.concat(logits:shape(), "x"), N .. "x3")
    for n = 1, N do
        for f = 1, F do
            local s, s2 = 0, 0
            for t = 1, T do
                local v = x:get(n, 1, f, t)
                s, s2 = s + v, s2 + v * v
            end
            local mean = s / T
            local sd = math.sqrt(math.max(s2 / T - mean * mean, 0))
            A.near(e:get(n, f), mean, 1e-4, "mean of bin " .. f)
            A.near(e:get(n, F + f), sd, 1e-3, "standard deviation of bin " .. f)
        end
    end
end)

test("'both' is the network's pooled output beside the spectrum statistics; nil is the network alone", function()
    mt.manual_seed(8)
    local x = mt.randn{ 3, 1, 8, 16 }
    local model = tiny_model(4)
    model:evaluate()
    local net = emb.chunk_features(model, x, "network")
    local spec = emb.chunk_features(model, x, "spectrum")
    local both = emb.chunk_features(model, x, "both")
    local old = emb.chunk_features(model, x, nil)
    A.eq(both:size(2), net:size(2) + spec:size(2))
    A.eq((both:narrow(2, 1, net:size(2)) - net):abs():max(), 0)
    A.eq((both:narrow(2, net:size(2) + 1, spec:size(2)) - spec):abs():max(), 0)
    A.eq((old - net):abs():max(), 0, "a run without anomaly.features embeds the network output")
end)

-- Scores of held-out rows against statistics fitted on the others, for a
-- corpus of one machine.
local function scores_of(x, n_train)
    local split = { machines = { "m" }, train = { index = {} } }
    for i = 1, n_train do split.train.index[i] = 1 end
    local cfg = { anomaly = { shrinkage = "ledoit-wolf", score = "mahalanobis" } }
    local stats = emb.fit(cfg, split, { embedding = x:narrow(1, 1, n_train) })
    local d, c = emb.score_rows(stats.m, x:narrow(1, n_train + 1, x:size(1) - n_train))
    return d, c
end

test("Mahalanobis and cosine scores do not depend on the units of a dimension", function()
    mt.manual_seed(9)
    local x = mt.randn{ 30, 6 } + 2
    local d1, c1 = scores_of(x, 20)
    -- Decibels beside activations: one dimension a thousand times larger.
    local scale = mt.tensor{ { 1000, 1, 1, 1, 1, 1 } }
    local d2, c2 = scores_of(x * scale + mt.tensor{ { 0, 0, 0, 0, 0, 0 } }, 20)
    for j = 1, #d1 do
        A.near(d2[j], d1[j], 1e-3 * math.max(1, d1[j]), "Mahalanobis score " .. j)
        A.near(c2[j], c1[j], 1e-4, "cosine score " .. j)
    end
end)

return tests
