"""Everything public in kneeai in one import, as `fastai.vision.all` does: `from kneeai.all import *`.

Written by hand (nbdev does not generate it), in the order of the layers. Not included: `kneeai.cli` (the command),
`kneeai.app` (the web app, which needs `pip install "kneeai[app]"`) and `kneeai.serve` (the REST service, `kneeai[serve]`)."""
from .core import *
from .dicom import *
from .deid import *
from .preprocess import *
from .mri import *
from .synthetic import *
from .synthetic_radiographs import *
from .volumes import *
from .radiographs import *
from .sampling import *
from .models import *
from .metrics import *
from .learner import *
from .distributed import *
from .tracking import *
from .train import *
from .radiograph_train import *
from .multiview import *
from .pretrain import *
from .semisup import *
from .tune import *
from .interpret import *
from .demo import *
from .active import *
