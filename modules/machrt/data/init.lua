-- machrt.data: tables (CSV, DataFrame), labels, folds, audio clip datasets
-- and the batch loader, under one name.
--
--   local data = require "machrt.data"
--   local df = data.read_csv("dataset.csv")
--   local enc = data.encode_labels(df, {"label"})      -- {classes, targets, index}
--   local folds, k = data.assign_folds(df, cfg.dataset)
--   local train_df, val_df = data.split(df, folds, 4)
--   local loader = data.Loader{module = "machrt.data.clips", config = ..., size = n, ...}

local csv = require "machrt.data.csv"
local frame = require "machrt.data.frame"
local labels = require "machrt.data.labels"
local folds = require "machrt.data.folds"
local loader = require "machrt.data.loader"

return {
    read_csv = csv.read,
    parse_csv = csv.parse,
    write_csv = csv.write,
    index_ids = csv.index_ids,
    DataFrame = frame,
    encode_labels = labels.encode,
    one_hot = labels.one_hot,
    kfold = folds.kfold,
    group_kfold = folds.group_kfold,
    assign_folds = folds.assign,
    split = folds.split,
    Loader = loader.Loader,
}
