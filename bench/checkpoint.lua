-- What a sealed checkpoint of the reference model costs per epoch: the
-- checksum of its tensors and metadata (mt.checksum, written with every
-- checkpoint and verified on resume) next to writing the file (mt.save).
-- ResNet34 width 64, 4 classes, with AdamW's two moments per parameter.
local mt = require "machrt"
local pipeline = require "machrt.pipeline"
local run_folder = require "machrt.run_folder"

local model = pipeline.build_model({ backbone = "resnet34", pool = "GeM", dropout = 0, width = 64,
                                     pretrained = false }, 4)
local tensors, bytes = {}, 0
for name, t in pairs(model:state_dict()) do
    tensors[name] = t
    tensors["state." .. name .. ".exp_avg"] = t:clone()
    tensors["state." .. name .. ".exp_avg_sq"] = t:clone()
    bytes = bytes + 3 * t:numel() * 4
end
local meta = { ["machrt.run"] = "{}" }
local path = os.tmpname()

local function best_of(reps, fn)
    local best = math.huge
    for _ = 1, reps do
        local t0 = mt.clock(); fn(); best = math.min(best, mt.clock() - t0)
    end
    return best
end

local sum = best_of(3, function() run_folder.checksum(tensors, meta) end)
local save = best_of(3, function() mt.save(path, tensors, meta) end)
os.remove(path)
local mib = bytes / 2 ^ 20
print(string.format("checkpoint of %.0f MiB: checksum %.2f s (%.0f MiB/s), mt.save %.2f s (%.0f MiB/s)",
                    mib, sum, mib / sum, save, mib / save))
