-- machrt.nn: layers with explicit forward/backward, containers, ResNets and
-- losses. See README ("Neural networks").
local Module = require "machrt.nn.module"
local pooling = require "machrt.nn.pooling"
local containers = require "machrt.nn.containers"
local loss = require "machrt.nn.loss"
local resnet = require "machrt.nn.resnet"
local margin = require "machrt.nn.margin"
local gaussian = require "machrt.nn.gaussian"

return {
    Module = Module,
    Conv2d = require "machrt.nn.conv",
    BatchNorm1d = require "machrt.nn.batchnorm1d",
    BatchNorm2d = require "machrt.nn.batchnorm",
    SyncBatchNorm2d = require "machrt.nn.sync_batchnorm",
    ReLU = require "machrt.nn.activation",
    Linear = require "machrt.nn.linear",
    Dropout = require "machrt.nn.dropout",
    MaxPool2d = pooling.MaxPool2d,
    AdaptiveAvgPool2d = pooling.AdaptiveAvgPool2d,
    GeM = pooling.GeM,
    Sequential = containers.Sequential,
    Flatten = containers.Flatten,
    BasicBlock = resnet.BasicBlock,
    resnet18 = resnet.resnet18,
    resnet34 = resnet.resnet34,
    BCEWithLogitsLoss = loss.BCEWithLogitsLoss,
    CrossEntropyLoss = loss.CrossEntropyLoss,
    MSELoss = loss.MSELoss,
    CosineLinear = margin.CosineLinear,
    ArcFaceLoss = margin.ArcFaceLoss,
    AdaCosLoss = margin.AdaCosLoss,
    gaussian_fit = gaussian.gaussian_fit,
    Mahalanobis = gaussian.Mahalanobis,
    dcase_autoencoder = require "machrt.nn.autoencoder",
    compile_inference = require("machrt.nn.inference_plan").compile_inference,
}
