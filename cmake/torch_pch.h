// Precompiled for every target that links LibTorch (see TorchPch.cmake).
#pragma once
#include <torch/torch.h>
