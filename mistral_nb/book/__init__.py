"""The book's own tooling, apart from its subject: exercises with checkable answers (``exercises``) and
solutions kept out of sight in Jupyter and Colab (``solutions``),
recorded results read the same way in a checkout and on Colab (``results``), listings of the
package's source (``source``), the window-conventions table (``conventions``) and widgets (``widgets``)."""
