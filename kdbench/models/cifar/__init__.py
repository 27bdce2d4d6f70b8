"""The CIFAR-100 architectures of the CRD codebase (RepDistiller, Tian et al. 2020), in timm's registry.

Importing this package registers, with `timm.models.register_model`, the 22 names the KD literature's CIFAR
tables use (the original's name in brackets where it differs):

- resnet.py: `cifar_resnet8/14/20/32/44/56/110`, `cifar_resnet8x4`, `cifar_resnet32x4`, `cifar_resnet50` [ResNet50]
- wrn.py: `cifar_wrn_16_1`, `cifar_wrn_16_2`, `cifar_wrn_40_1`, `cifar_wrn_40_2`
- vgg.py: `cifar_vgg8/11/13/16/19` [vgg8 … vgg19, i.e. the `_bn` variants]
- mobilenetv2.py: `cifar_mobilenetv2` [MobileNetV2 = mobile_half]
- shufflenetv1.py: `cifar_shufflev1` [ShuffleV1]; shufflenetv2.py: `cifar_shufflev2` [ShuffleV2]

Parameter counts and state-dict keys equal the original classes' (checkpoints load as saved). The common timm
interface, `feature_info` and the pre-activation option are described in `_common.py`. `kdbench.models`
imports this package, and `import kdbench` arranges for it to be imported when timm is (`kdbench/__init__.py`).
"""

from kdbench.models.cifar import mobilenetv2, resnet, shufflenetv1, shufflenetv2, vgg, wrn  # noqa: F401
