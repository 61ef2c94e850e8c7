"""Pure planning: validated args models and ``plan_*`` functions returning complete, frozen
plans (workloads plus every target-neutral decision). No Pulumi resources are declared here;
`pulumi` is imported only for the types of inputs (`pulumi.Output`, provider resources).
"""
