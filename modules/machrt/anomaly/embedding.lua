-- The embedding detector: a network learns which machine (type and model
-- id) it hears from normal clips; a clip is anomalous when its pooled
-- embedding lies far from its machine's normal embeddings.
--
--   local model, loss = emb.build(cfg, split)            -- ResNet + head, its loss
--   local e = emb.embed(model, front, loader, n, cfg.anomaly.features)  -- {embedding = n x D, logits = n x C}
--   local stats = emb.fit(cfg, split, e_train)            -- per machine: mean, precision
--   local scores = emb.scores(stats, split, items, e)     -- {mahalanobis =, cosine =, nll =}
local mt = require "machrt"
local nn = require "machrt.nn"
local pipeline = require "machrt.pipeline"
local log = require "machrt.log"

local M = {}

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

--- The network (architecture section) with the head of anomaly.head in
--- place of its classifier, on the CPU, and the training loss.
function M.build(cfg, split, opts)
    local a, C = cfg.anomaly, #split.machines
    if C < 2 and a.head ~= "softmax" then
        log.info("anomaly.head = %s with a single machine: the classifier has nothing to tell apart", a.head)
    end
    local model = pipeline.build_model(cfg.architecture, C, opts)
    local fc = model.children.fc
    local D = fc.cin
    local loss
    if a.head == "softmax" then
        loss = nn.CrossEntropyLoss()
    else
        local scale = a.head == "adacos" and math.sqrt(2) * math.log(math.max(C - 1, 2)) or a.scale
        local head = nn.CosineLinear(D, C, { scale = scale })
        head:_set_path("fc")
        model.children.fc = head
        model:flatten_parameters()
        loss = a.head == "adacos" and nn.AdaCosLoss(head) or nn.ArcFaceLoss(head, { margin = a.margin })
    end
    return model, loss
end

--- The embedding of each chunk of a front-end output x ({N, 1, bins,
--- frames}) and the head's logits, both {N, .} on the CPU. What the
--- embedding holds is anomaly.features: "network" (the pooled network
--- output), "spectrum" (each log-mel bin's mean and standard deviation over
--- the chunk's frames: the fine spectral detail a fault adds, which a
--- network that tells machines apart easily has no reason to keep) or
--- "both", side by side. The network always runs: nll needs its logits.
function M.chunk_features(model, x, which)
    which = which or "network" -- runs made before anomaly.features embedded the network output alone
    local logits = model:forward(x):to("cpu")
    local parts = {}
    if which ~= "spectrum" then parts[#parts + 1] = model.children.flatten.output:to("cpu") end
    if which ~= "network" then
        local N, F, T = x:size(1), x:size(3), x:size(4)
        local s = x:reshape{ N, F, T }:to("cpu")
        local mean = s:mean(3)
        local var = ((s * s):mean(3) - mean * mean):relu()
        parts[#parts + 1], parts[#parts + 2] = mean, var:sqrt()
    end
    if #parts == 1 then return parts[1], logits end
    local width = 0
    for _, p in ipairs(parts) do width = width + p:size(2) end
    local e, at = mt.empty{ x:size(1), width }, 1
    for _, p in ipairs(parts) do
        e:narrow(2, at, p:size(2)):copy(p)
        at = at + p:size(2)
    end
    return e, logits
end

--- Pooled embeddings (M.chunk_features) and head outputs of every clip a
--- chunk loader yields (the mean over a clip's chunks), on the CPU.
function M.embed(model, front, loader, n, which)
    model:evaluate()
    local emb, logits, seen
    for _, batch in loader:epoch(0) do
        for _, why in ipairs(batch.skipped) do log.info("skipped %s", why) end
        if batch.chunks then
            local e, out = M.chunk_features(model, front(batch.chunks), which)
            if not emb then
                emb, logits, seen = mt.zeros{ n, e:size(2) }, mt.zeros{ n, out:size(2) }, {}
            end
            local at = 1
            for j, i in ipairs(batch.indices) do
                local c = batch.counts[j]
                emb:select(1, i):copy(e:narrow(1, at, c):mean(1))
                logits:select(1, i):copy(out:narrow(1, at, c):mean(1))
                seen[i] = true
                at = at + c
            end
        end
    end
    model:training()
    for i = 1, n do
        if not (seen and seen[i]) then fail("embedding: clip %d could not be read, so it has no score", i) end
    end
    return { embedding = emb, logits = logits }
end

-- Rows of `t` whose item belongs to machine k, and their item numbers.
local function rows_of(t, items, k)
    local idx = {}
    for i, m in ipairs(items.index) do if m == k then idx[#idx + 1] = i end end
    return M.take(t, idx), idx
end

--- The rows idx of a 2-D tensor, as a new tensor.
function M.take(t, idx)
    local out = mt.empty{ #idx, t:size(2) }
    for j, i in ipairs(idx) do out:select(1, j):copy(t:select(1, i)) end
    return out
end

-- The statistics of one machine's normal embeddings x: each dimension's
-- spread (scale), the mean and, with two rows or more, the Gaussian, all
-- of the embeddings divided by scale. Dimensions in different units (a
-- network's activations, decibels) then weigh alike in the cosine score
-- and in the shrinkage target of the covariance.
local function stats_of(cfg, x)
    local n = x:size(1)
    local mean = x:mean(1)
    local scale = mt.ones{ x:size(2) }
    if n >= 2 then
        local d = x - mean:reshape{ 1, -1 }
        local sd = (d * d):mean(1):sqrt()
        -- A dimension that does not vary keeps a floor in its own units, not a division by zero.
        scale = sd + mean:abs() * 1e-6 + 1e-12
    end
    local z = x / scale:reshape{ 1, -1 }
    local s = { mean = z:mean(1), scale = scale, clips = n }
    if n >= 2 then
        local g = nn.gaussian_fit(z, { shrinkage = cfg.anomaly.shrinkage })
        s.gaussian, s.shrinkage = nn.Mahalanobis(g.mean, g.precision), g.shrinkage
        s.precision = g.precision
    end
    return s
end

--- Mahalanobis (nil without a Gaussian) and cosine scores of the rows of
--- x (embeddings of one machine) against its statistics s = {mean, scale,
--- gaussian}.
function M.score_rows(s, x)
    if s.scale then x = x / s.scale:reshape{ 1, -1 } end
    local d = s.gaussian and s.gaussian:forward(x):totable()
    local mean = s.mean:reshape{ 1, -1 }
    local cos = (x * mean):sum(2) / ((x * x):sum(2):sqrt() * math.sqrt((mean * mean):sum()) + 1e-12)
    local c = {}
    for j, v in ipairs(cos:totable()) do c[j] = 1 - v end
    return d, c
end

--- Per machine, from its normal training embeddings: the mean (cosine
--- score) and, with two clips or more, the Gaussian (Mahalanobis score).
--- A machine with a single normal clip has no covariance: with
--- anomaly.score = mahalanobis that is an error naming it.
function M.fit(cfg, split, e)
    local stats = {}
    for k, m in ipairs(split.machines) do
        local s = stats_of(cfg, (rows_of(e.embedding, split.train, k)))
        if not s.gaussian then
            if cfg.anomaly.score == "mahalanobis" then
                fail("machine %s has a single normal training clip: the Mahalanobis score needs at least 2 "
                     .. "for a covariance (add clips, or use anomaly.score = cosine or nll)", m)
            end
            log.info("machine %s has a single normal training clip: no Mahalanobis score for it", m)
        end
        stats[m] = s
    end
    return stats
end

--- The scores of the normal training clips that thresholds are chosen
--- from, each computed without the clip itself: per machine, 5 folds of
--- its clips (fewer with fewer clips), the statistics of the other folds
--- scoring the held-out one (in-sample distances would be too small, and
--- every new clip would look anomalous). The network saw every clip, so
--- nll stays in-sample. A machine with too few clips to hold one out
--- (2 for Mahalanobis) scores in-sample, and says so.
function M.normal_scores(cfg, split, stats, e)
    local which = cfg.anomaly.score
    local all = M.scores(stats, split, split.train, e)
    if which == "nll" then return all.nll end
    local out = all[which]
    for k, m in ipairs(split.machines) do
        local x, idx = rows_of(e.embedding, split.train, k)
        local n = #idx
        local folds = math.min(5, n)
        if n < (which == "mahalanobis" and 3 or 2) then
            log.info("machine %s: %d normal training clips, too few to hold one out: its threshold comes "
                     .. "from in-sample scores", m, n)
        else
            for f = 0, folds - 1 do
                local rest, held = {}, {}
                for j = 1, n do
                    if (j - 1) % folds == f then held[#held + 1] = j else rest[#rest + 1] = j end
                end
                local d, c = M.score_rows(stats_of(cfg, M.take(x, rest)), M.take(x, held))
                for j, h in ipairs(held) do out[idx[h]] = which == "mahalanobis" and d[j] or c[j] end
            end
        end
    end
    return out
end

--- The three scores of every clip of `items` from its embeddings `e`:
--- mahalanobis (distance to the machine's Gaussian), cosine (1 - cosine
--- similarity to the machine's mean embedding) and nll (minus the log of
--- the classifier's probability of the clip's machine). A higher score is
--- more anomalous. A score a machine cannot give is nil in its list.
function M.scores(stats, split, items, e)
    local out = { mahalanobis = {}, cosine = {}, nll = {} }
    for k, m in ipairs(split.machines) do
        local x, idx = rows_of(e.embedding, items, k)
        if #idx > 0 then
            local d, c = M.score_rows(stats[m], x)
            for j, i in ipairs(idx) do
                out.mahalanobis[i] = d and d[j]
                out.cosine[i] = c[j]
            end
        end
    end
    for i, row in ipairs(e.logits:totable()) do out.nll[i] = M.nll(row, items.index[i]) end
    return out
end

--- Minus the log-softmax of logits row `row` at class k.
function M.nll(row, k)
    local top = -math.huge
    for _, v in ipairs(row) do top = math.max(top, v) end
    local z = 0
    for _, v in ipairs(row) do z = z + math.exp(v - top) end
    return top + math.log(z) - row[k]
end

return M
