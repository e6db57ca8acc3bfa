# The extra test environments, one line each, read by .ci/bootstrap.sh (which makes them:
# one bootstrap step per line, named in the first field) and .ci/test.sh (which runs the
# Django-backend tests in each, one pass per line, in this order after pass 1).
#
#   STEP  DIRECTORY  PYTHON  DJANGO_REQUIREMENT  DESCRIPTION
#
# PYTHON is a pyenv version ("3.13": pyenv's newest 3.13.x; the environment is skipped when
# pyenv has none) or "default" (python3 on PATH). DJANGO_REQUIREMENT names one release
# series (>=X.Y,<...): when the package index has no X.Y.* the newest Django is installed
# instead, with a warning. DESCRIPTION (the rest of the line) is what the test pass prints.
# shellcheck disable=SC2034  # used by the scripts that source this file
EXTRA_VENVS=(
    "venv-dj6  .venv-dj6  3.12    Django>=6.0,<6.1  Django 6.0"
    "venv-dj42 .venv-dj42 default Django>=4.2,<4.3  Django 4.2 LTS"
    "venv-dj61 .venv-dj61 3.13    Django>=6.1,<6.2  Django 6.1 on Python 3.13"
)
