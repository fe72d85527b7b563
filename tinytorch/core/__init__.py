"""The completed modules 01-17: tensors with autograd, layers, losses, optimizers,
training, data loading, precision, profiling and serialization."""
from .attention import MultiHeadSelfAttention, TransformerBlock
from .checks import (check_choice, check_finite_weights, check_fraction, check_index_array,
                     check_int, check_loader, check_matrix_shape, check_number, check_real_array)
from .conv import Conv2d, MaxPool2d
from .data import DataLoader, Dataset, TensorDataset
from .functional import accuracy, cross_entropy, kl_div, log_softmax, mse_loss, relu, softmax
from .init import manual_seed
from .layers import Dropout, Flatten, LayerNorm, Linear, ReLU, Sequential, Tanh
from .module import Module, Parameter, has_extra_state
from .optim import SGD, Adam, Optimizer
from .precision import dequantize_int8, int8_scale, model_nbytes, quantization_error, quantize_int8
from .profiling import best_median_times, count_parameters, format_table, layer_macs, median_time
from .serialization import (build_module, check_rebuildable, load_model, module_spec, read_metadata,
                            read_npz, save_model, write_npz_atomic)
from .tensor import Tensor, is_grad_enabled, no_grad
from .training import evaluate, fit, predict, train_epoch
