-- The batch loader: seeded shuffling, batching, drop_last, and a pool of
-- worker threads (machrt.workers) that prepare batches ahead of the training
-- step. A batch's content depends only on (seed, epoch, batch index), so the
-- batches are identical for any number of workers, including none.
--
--   local loader = data.Loader{
--     module = "machrt.data.clips", config = clip_config,  -- the job module and its config
--     size = n, batch_size = 32, shuffle = true, drop_last = true, seed = 7,
--     workers = 4, prefetch = 2,                           -- jobs in flight per worker
--   }
--   for b, batch in loader:epoch(1) do ... end
--   loader:num_batches(); loader:close()
--
-- Data-parallel runs (machrt.dist): shard = {rank =, size =} gives this
-- rank its contiguous block of every batch (batch.weight: its share times
-- the rank count, 1 unless the last batch splits unevenly), so ranks
-- 0..size-1 together see exactly one process's batches; items = {i, ...}
-- makes the loader cover only those items, in that order.

local workers = require "machrt.workers"
local random = require "machrt.random"
local shard = require "machrt.dist.shard"

local M = {}
local Loader = {}
Loader.__index = Loader

local function check_int(v, name, min)
    if math.type(v) ~= "integer" or v < min then
        error(string.format("Loader: %s must be an integer >= %d, got %s", name, min, tostring(v)), 3)
    end
end

function M.Loader(opts)
    if type(opts) ~= "table" then error("Loader: expects an options table", 2) end
    if opts.items ~= nil and type(opts.items) ~= "table" then
        error("Loader: items must be a list of item indices, got " .. type(opts.items), 2)
    end
    local size = opts.items and #opts.items or opts.size
    check_int(size, "size (number of items)", 0)
    check_int(opts.batch_size, "batch_size", 1)
    local self = setmetatable({
        module = opts.module or error("Loader: module (the job module) is required", 2),
        config = opts.config or {},
        size = size,
        items = opts.items,
        shard = opts.shard,
        batch_size = opts.batch_size,
        shuffle = opts.shuffle ~= false,
        drop_last = opts.drop_last == true,
        seed = opts.seed or 0,
        workers = opts.workers or 0,
        prefetch = opts.prefetch or 2,
        next_id = 0,
        name = opts.name or "loader",
    }, Loader)
    check_int(self.workers, "workers", 0)
    check_int(self.prefetch, "prefetch", 1)
    -- The data and the settings are the user's, not the caller's code: level 0.
    if self:num_batches() == 0 then
        if self.size == 0 then error(string.format("%s: the dataset is empty", self.name), 0) end
        error(string.format("%s: batch size %d is larger than the %d items and the last "
                            .. "incomplete batch is dropped (drop_last_batch): no batch to run",
                            self.name, self.batch_size, self.size), 0)
    end
    if self.workers > 0 then
        self.pool = workers.Pool{ module = self.module, config = self.config, workers = self.workers }
    else
        -- The same job function in this state; results take the same
        -- serialization path as a worker's, so both modes return alike.
        self.job = require(self.module)(self.config, 0)
    end
    return self
end

function Loader:num_batches()
    if self.drop_last then return self.size // self.batch_size end
    return (self.size + self.batch_size - 1) // self.batch_size
end

--- The item order of an epoch (1-based item indices).
function Loader:order(epoch)
    local o = {}
    if not self.shuffle then
        for i = 1, self.size do o[i] = i end
    else
        o = random.stream(self.seed, epoch, 0, 0):permutation(self.size)
    end
    if self.items then
        for k, i in ipairs(o) do o[k] = self.items[i] end
    end
    return o
end

--- The jobs of an epoch: {indices =, epoch =, batch =} per batch.
function Loader:jobs(epoch)
    local order, jobs = self:order(epoch), {}
    for b = 1, self:num_batches() do
        local first = (b - 1) * self.batch_size + 1
        local last = math.min(first + self.batch_size - 1, self.size)
        local idx = {}
        for k = first, last do idx[#idx + 1] = order[k] end
        local weight = 1
        if self.shard then
            idx, weight = shard.shard(idx, { rank = self.shard.rank, size = self.shard.size, even = false })
        end
        jobs[b] = { indices = idx, epoch = epoch, batch = b, weight = weight }
    end
    return jobs
end

local function with_weight(batch, job)
    batch.weight = job.weight
    return batch
end

--- Iterates (b, batch) over the epoch's batches in order, `first` (default 1)
--- onwards; workers run ahead by up to workers * prefetch batches.
function Loader:epoch(epoch, first)
    local jobs = self:jobs(epoch)
    local b = (first or 1) - 1
    if not self.pool then
        return function()
            b = b + 1
            if b > #jobs then return nil end
            return b, with_weight(workers.roundtrip(self.job(jobs[b])), jobs[b])
        end
    end
    local ids, submitted = {}, b
    local window = self.workers * self.prefetch
    local function fill()
        while submitted < #jobs and submitted - b < window do
            submitted = submitted + 1
            self.next_id = self.next_id + 1
            ids[submitted] = self.next_id
            self.pool:submit(self.next_id, jobs[submitted])
        end
    end
    return function()
        b = b + 1
        if b > #jobs then return nil end
        fill()
        local ok, batch = pcall(self.pool.take, self.pool, ids[b])
        if not ok then
            -- A job's error is text from the worker's state, with its frames.
            -- A user's error (no "file.lua:N:" on its first line, the host's
            -- rule in runtime/main.c) is raised as its one line; a bug as it came.
            local first = tostring(batch):match("^[^\n]*")
            error(first:find("%S:%d+:") and batch or first, 0)
        end
        ids[b] = nil
        fill()
        return b, with_weight(batch, jobs[b])
    end
end

--- Stops the workers (also done by the collector).
function Loader:close()
    if self.pool then
        self.pool:close()
        self.pool = nil
    end
end
Loader.__close = Loader.close
Loader.__gc = Loader.close

return M
