"""Network pieces more than one method builds on: one implementation each.

``vgg19``: torchvision's VGG19 feature stack (GPEMSR's MPF mask and contextual loss,
Real-ESRGAN's perceptual loss). ``spynet``: SPyNet optical flow in basicsr's layout (GPEMSR's
POD, BasicVSR). ``imagenet``: the ImageNet input normalisation both networks were trained with.
"""
